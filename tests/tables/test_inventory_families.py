"""The analytic inventory of the families beyond the Llama shape, against transformers' modules on the meta device.

For each family in ``catalog._FAMILIES`` added for MoE, MLA, LayerNorm and GELU-MLP models (olmo2, granite, cohere,
starcoder2, qwen3_moe, gpt_oss, deepseek_v2, deepseek_v3, llama4_text), ``inventory`` must agree with
``exact_inventory`` (``init_empty_weights`` + ``AutoModelForCausalLM.from_config``) in total, kind by kind, in the
decoder Linear groups and in tying; and ftcalc's LoRA count at r=16, ``all-linear``, must equal what peft's
``get_peft_model`` makes trainable on that same meta-device model.

Two sources of configs: the published config.json files in fixtures/configs/ (each with a ``.source.txt``), and
small configs that switch on every structural option of a family (q_lora_rank set and unset, dense layers before
the MoE, shared experts, interleaved MoE layers, use_qk_norm, biases). The small ones are shapes chosen to exercise
the code paths, not published models. Needs the [train] extra (torch, transformers, accelerate, peft).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("accelerate")
pytest.importorskip("transformers")

from ftcalc.model.memory import lora_params  # noqa: E402
from ftcalc.model.options import TrainingOptions  # noqa: E402
from ftcalc.tables.catalog import architecture_from_config  # noqa: E402
from ftcalc.tables.inventory import KINDS, exact_inventory, inventory  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "configs"

_SMALL = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
              vocab_size=128, max_position_embeddings=256)
SMALL_CONFIGS: dict[str, dict] = {
    "olmo2": dict(model_type="olmo2", **_SMALL),
    "granite": dict(model_type="granite", embedding_multiplier=12.0, residual_multiplier=0.22,
                    attention_multiplier=0.015625, logits_scaling=8.0, **_SMALL),
    "cohere": dict(model_type="cohere", logit_scale=0.0625, **_SMALL),
    "cohere-qk-norm-untied": dict(model_type="cohere", use_qk_norm=True, tie_word_embeddings=False, **_SMALL),
    "starcoder2": dict(model_type="starcoder2", sliding_window=64, **_SMALL),
    "starcoder2-no-bias": dict(model_type="starcoder2", use_bias=False, **_SMALL),
    "qwen3_moe": dict(model_type="qwen3_moe", num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
                      head_dim=32, **_SMALL),
    "qwen3_moe-dense-layers": dict(model_type="qwen3_moe", num_experts=8, num_experts_per_tok=2,
                                   moe_intermediate_size=32, mlp_only_layers=[0], decoder_sparse_step=1, **_SMALL),
    "gpt_oss": dict(model_type="gpt_oss", num_local_experts=8, num_experts_per_tok=2, head_dim=16,
                    layer_types=["sliding_attention", "full_attention"] * 2, sliding_window=32, **_SMALL),
    "deepseek_v2-lite-shape": dict(model_type="deepseek_v2", n_routed_experts=8, num_experts_per_tok=2,
                                   moe_intermediate_size=32, n_shared_experts=2, first_k_dense_replace=1,
                                   kv_lora_rank=16, q_lora_rank=None, qk_nope_head_dim=16, qk_rope_head_dim=8,
                                   v_head_dim=16, **_SMALL),
    "deepseek_v2-q-lora": dict(model_type="deepseek_v2", n_routed_experts=8, num_experts_per_tok=2,
                               moe_intermediate_size=32, n_shared_experts=1, first_k_dense_replace=0,
                               kv_lora_rank=16, q_lora_rank=24, qk_nope_head_dim=16, qk_rope_head_dim=8,
                               v_head_dim=16, **_SMALL),
    "deepseek_v3": dict(model_type="deepseek_v3", n_routed_experts=8, num_experts_per_tok=2,
                        moe_intermediate_size=32, n_shared_experts=1, first_k_dense_replace=2, n_group=1,
                        topk_group=1, kv_lora_rank=16, q_lora_rank=24, qk_nope_head_dim=16, qk_rope_head_dim=8,
                        v_head_dim=16, **_SMALL),
    "llama4_text-interleaved": dict(model_type="llama4_text", num_local_experts=4, num_experts_per_tok=1,
                                    intermediate_size_mlp=80, interleave_moe_layer_step=2, head_dim=16, **_SMALL),
    "llama4_text-all-moe": dict(model_type="llama4_text", num_local_experts=4, num_experts_per_tok=1,
                                intermediate_size_mlp=80, head_dim=16, **_SMALL),
}
# the new families' published configs (each with a .source.txt); the folder also holds checkpoint-format
# fixtures of measured families, whose source is a "_source" key (tests/tables/test_quantization.py)
PUBLISHED = {p.stem: json.loads(p.read_text()) for p in sorted(FIXTURES.glob("*.json"))
             if p.with_suffix(".source.txt").is_file()}
CASES = {**{f"published:{k}": v for k, v in PUBLISHED.items()}, **SMALL_CONFIGS}


def test_every_published_fixture_names_its_source() -> None:
    assert PUBLISHED, "no published config fixtures"
    for name in PUBLISHED:
        source = (FIXTURES / f"{name}.source.txt").read_text()
        assert "https://" in source and "retrieved" in source, name


@pytest.fixture(scope="module")
def exact_cache() -> dict:
    return {}


def _pair(name: str, cache: dict):
    if name not in cache:
        cfg = CASES[name]
        cache[name] = (inventory(architecture_from_config(cfg, where=name)), exact_inventory(cfg))
    return cache[name]


@pytest.mark.parametrize("name", list(CASES))
def test_params_by_kind_and_total_match_meta_device(name: str, exact_cache) -> None:
    analytic, exact = _pair(name, exact_cache)
    assert "other" not in exact.params_by_kind, f"{name}: unclassified parameters {exact.params_by_kind.get('other')}"
    diff = {k: (analytic.params_by_kind.get(k, 0), exact.params_by_kind.get(k, 0))
            for k in KINDS if analytic.params_by_kind.get(k, 0) != exact.params_by_kind.get(k, 0)}
    assert not diff, f"{name}: kind -> (analytic, meta device) differ: {diff}"
    assert analytic.total_params == exact.total_params


@pytest.mark.parametrize("name", list(CASES))
def test_linear_groups_and_tying_match_meta_device(name: str, exact_cache) -> None:
    analytic, exact = _pair(name, exact_cache)

    def groups(inv):
        return sorted((g.kind, g.in_features, g.out_features, g.count, g.bias) for g in inv.linears)

    assert groups(analytic) == groups(exact)
    assert analytic.tied_embeddings == exact.tied_embeddings


def _peft_trainable(cfg: dict, r: int) -> int:
    from accelerate import init_empty_weights
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    c = dict(cfg)
    hf = AutoConfig.for_model(c.pop("model_type"), **{k: v for k, v in c.items() if k != "architectures"})
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(hf)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0,
                                                  target_modules="all-linear", task_type="CAUSAL_LM"))
    return sum(p.numel() for p in peft_model.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", [n for n in CASES if n in SMALL_CONFIGS or n.startswith("published:")])
def test_lora_all_linear_r16_matches_peft(name: str) -> None:
    cfg = CASES[name]
    arch = architecture_from_config(cfg, where=name)
    opts = TrainingOptions(method="lora", lora_r=16, lora_targets=("all-linear",), lora_dropout=0.0)
    assert lora_params(inventory(arch), opts) == _peft_trainable(cfg, 16)
