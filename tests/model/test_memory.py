"""The memory model: component formulas against hand-computed values, and its properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftcalc.model.memory import (
    Coefficients,
    activation_terms_per_token,
    estimate_memory,
    kv_cache_bytes,
    logits_bytes,
    optimizer_state_bytes,
    optimizer_step_transient_bytes,
    quantized_linear_bytes,
    resolve_attention,
    weights_bytes,
)
from ftcalc.model.options import make_options
from ftcalc.tables.catalog import resolve_model
from ftcalc.tables.inventory import inventory

L8 = resolve_model("llama-3-8b")
INV8 = inventory(L8.arch)


def test_nf4_bytes_follow_the_qlora_paper():
    # 4-bit data + fp32 absmax per 64 block = 4.5 bits/param; double quantization = ~4.127 bits/param
    n = 64 * 256 * 1000
    assert quantized_linear_bytes(n, double_quant=False) == n / 2 + n / 64 * 4
    dq = quantized_linear_bytes(n, double_quant=True)
    assert dq * 8 / n == pytest.approx(4.127, abs=0.01)


def test_weights_by_method_for_llama3_8b():
    full = weights_bytes(INV8, make_options(method="full"))
    assert full["weights"] == 2 * 8_030_261_248 and full["lora_adapters"] == 0
    mixed = weights_bytes(INV8, make_options(method="full", precision="bf16-mixed"))
    assert mixed["weights"] == 4 * 8_030_261_248
    lora = weights_bytes(INV8, make_options(method="lora", lora_r=16))
    # r*(in+out) per projection, 32 layers, fp32 adapters: the 41,943,040 trainable params peft reports
    assert lora["lora_adapters"] == 4 * 41_943_040
    q = weights_bytes(INV8, make_options(method="qlora"))
    # measured on an H100 after loading (run a-006): 7.43 GiB including the adapters
    assert (q["weights"] + q["lora_adapters"]) / 2**30 == pytest.approx(7.43, abs=0.02)


def test_adamw_states_follow_the_parameter_dtype():
    bf16 = optimizer_state_bytes(INV8, make_options(method="full"))["optimizer_states"]
    assert bf16 == 2 * 2 * INV8.total_params  # exp_avg + exp_avg_sq, zeros_like(bf16 param)
    fused_tmp = optimizer_step_transient_bytes(INV8, make_options(method="full", optimizer="adamw_torch_fused"))
    foreach_tmp = optimizer_step_transient_bytes(INV8, make_options(method="full"))
    assert fused_tmp == 0 and foreach_tmp == 2 * INV8.total_params
    eight = optimizer_state_bytes(INV8, make_options(method="full", optimizer="adamw_8bit"))["optimizer_states"]
    assert eight / INV8.total_params == pytest.approx(2.03, abs=0.02)
    paged = optimizer_state_bytes(INV8, make_options(method="full", optimizer="paged_adamw_32bit"))
    assert paged["optimizer_states"] == 0 and paged["optimizer_states_paged"] == 8 * INV8.total_params
    assert optimizer_state_bytes(INV8, make_options(method="full", optimizer="sgd"))["optimizer_states"] == 0


def test_lora_activation_ledger_matches_the_hand_count():
    # bf16-true LoRA on all seven projections, dropout > 0, SDPA: 31H + 9I bytes/token/layer plus small terms
    terms = activation_terms_per_token(L8.arch, make_options(method="lora"), INV8)
    h, i = 4096, 14336
    assert sum(terms.values()) == pytest.approx(31 * h + 9 * i, rel=0.01)


def test_logits_are_three_fp32_copies_of_batch_seq_vocab():
    o = make_options(method="lora", seq_len=2048, batch_size=2)
    assert logits_bytes(L8.arch, o, Coefficients()) == 3 * 4 * 4096 * 128256
    fused = make_options(method="lora", seq_len=2048, batch_size=2, loss="fused")
    assert logits_bytes(L8.arch, fused, Coefficients()) < 0.1 * logits_bytes(L8.arch, o, Coefficients())


def test_kv_cache():
    # 2 x 32 layers x 8 kv heads x 128 x 8192 tokens x 2 bytes = 1 GiB
    assert kv_cache_bytes(L8.arch, 1, 8192) == 2**30


def test_gemma2_attention_depends_on_the_transformers_version():
    g = resolve_model("gemma-2-2b")
    o = make_options(method="lora")
    assert resolve_attention(g.arch, o, "5.17.0") == "sdpa"
    assert resolve_attention(g.arch, o, "5.23.0") == "eager"
    assert resolve_attention(g.arch, make_options(method="lora", attention="sdpa"), "5.23.0") == "sdpa"


def test_breakdown_sums_to_the_totals():
    e = estimate_memory(L8.arch, INV8, make_options(method="qlora", seq_len=4096, batch_size=2))
    allocated = sum(v for k, v in e.breakdown.items()
                    if k not in ("allocator_fragmentation", "cuda_context", "paged_optimizer_states"))
    assert allocated == pytest.approx(e.peak_allocated_bytes)
    assert sum(e.breakdown.values()) == pytest.approx(e.device_used_bytes)
    assert e.peak_allocated_bytes <= e.peak_reserved_bytes <= e.device_used_bytes


def test_reserved_is_capped_by_the_gpu_but_never_below_allocated():
    o = make_options(method="lora", seq_len=2048, batch_size=16)
    free = estimate_memory(L8.arch, INV8, o)
    capped = estimate_memory(L8.arch, INV8, o, gpu_memory_bytes=free.peak_allocated_bytes + 2**30)
    assert capped.peak_reserved_bytes < free.peak_reserved_bytes
    assert capped.peak_reserved_bytes >= capped.peak_allocated_bytes


MODELS = ["llama-3-8b", "llama-3.2-1b", "qwen2.5-3b", "gemma-2-2b", "mistral-7b", "phi-3.5-mini", "qwen3-8b"]


@settings(max_examples=int(__import__("os").environ.get("FTCALC_HYPOTHESIS_EXAMPLES", "150")), deadline=None)
@given(
    model=st.sampled_from(MODELS),
    method=st.sampled_from(["full", "lora", "qlora"]),
    ckpt=st.booleans(),
    optimizer=st.sampled_from(["adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_32bit", "sgd", "adafactor"]),
    precision=st.sampled_from(["bf16-true", "bf16-mixed"]),
    seq=st.integers(16, 4096),
    batch=st.integers(1, 32),
    rank=st.integers(1, 256),
)
def test_memory_is_positive_and_monotone(model, method, ckpt, optimizer, precision, seq, batch, rank):
    spec = resolve_model(model)
    inv = inventory(spec.arch)

    def used(**kw):
        base = dict(method=method, gradient_checkpointing=ckpt, optimizer=optimizer, precision=precision,
                    seq_len=seq, batch_size=batch, lora_r=rank)
        base.update(kw)
        e = estimate_memory(spec.arch, inv, make_options(**base))
        assert all(v >= 0 and math.isfinite(v) for v in e.breakdown.values())
        return e.peak_allocated_bytes, e.device_used_bytes

    a0, d0 = used()
    assert a0 > 0 and d0 >= a0
    for kw in (dict(batch_size=batch + 1), dict(seq_len=seq + 64), dict(lora_r=rank + 8)):
        a1, d1 = used(**kw)
        assert a1 >= a0 and d1 >= d0 * (1 - 1e-9), kw


def test_all_linear_targets_follow_the_model():
    # regression: the default targets must be the model's own Linear names (Phi-3 fuses qkv and gate/up)
    import ftcalc

    est = ftcalc.estimate("phi-3.5-mini", method="lora", lora_r=16)
    inv = inventory(resolve_model("phi-3.5-mini").arch)
    assert est.trainable_params == sum(16 * (g.in_features + g.out_features) * g.count for g in inv.linears)


def test_gradient_accumulation_keeps_gradients_through_the_next_forward():
    one = estimate_memory(L8.arch, INV8, make_options(method="full", seq_len=1024, gradient_checkpointing=True,
                                                      optimizer="adamw_torch_fused"))
    four = estimate_memory(L8.arch, INV8, make_options(method="full", seq_len=1024, gradient_checkpointing=True,
                                                       optimizer="adamw_torch_fused", gradient_accumulation_steps=4))
    assert four.phases["loss_backward"] - one.phases["loss_backward"] == pytest.approx(2 * INV8.total_params)
    assert four.peak_allocated_bytes >= one.peak_allocated_bytes
