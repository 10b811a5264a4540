"""The time model: FLOPs per trained token over an achieved rate, plus memory-bound per-step work.

    ftcalc estimate --model 8b --method qlora --gpu h100 --dataset-tokens 50M

step time = FLOPs per step / (efficiency x dense bf16 peak)          (compute)
          + QLoRA dequantization bytes / memory bandwidth              (4-bit weights -> bf16, each use)
          + optimizer bytes / memory bandwidth                         (AdamW reads and writes its states)
          + decoder layers x a per-layer launch overhead                (small kernels: LoRA, norms, RoPE)

FLOPs per token (Kaplan et al. 2020; PaLM appendix B for the attention term):
- forward: 2 x (decoder Linear params + LM head) + 2 x L x T x (q_dim) for QK^T and PV with a causal mask
  (half of the T x T scores);
- full fine-tuning: backward = 2 x forward (input and weight gradients): 6N in all;
- LoRA/QLoRA: backward computes input gradients only through the frozen weights (1 x forward) plus the
  adapters' own 6 x r x (in + out) per layer;
- gradient checkpointing recomputes the forward once more.
``efficiency`` (per method) and the overheads are fitted on measured runs (``ftcalc calibrate``), and
move to other GPUs through their datasheet bf16 rate and memory bandwidth (data/gpus.csv).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from ftcalc.catalog import ModelSpec
from ftcalc.inventory import inventory
from ftcalc.memory import _installed_transformers, lora_params, resolve_attention  # noqa: F401
from ftcalc.options import TrainingOptions

__all__ = ["ThroughputCoefficients", "flops_per_token", "step_seconds", "tokens_per_second", "load_throughput"]


@dataclass(frozen=True)
class ThroughputCoefficients:
    """Fitted on H100/H200 runs (data/coefficients.json, section "throughput")."""

    efficiency_full: float = 0.45  # achieved / dense bf16 peak for the matmul FLOPs
    efficiency_lora: float = 0.40
    efficiency_qlora: float = 0.40
    dequant_bandwidth_share: float = 0.5  # share of memory bandwidth the dequantization kernels reach
    layer_overhead_s: float = 0.0005  # per decoder layer per pass (launches of norms, RoPE, attention, MLP)
    lora_module_overhead_s: float = 0.0002  # per LoRA-adapted Linear per pass (cast, dropout, A, B, scale, add)
    qlora_module_overhead_s: float = 0.0001  # per 4-bit Linear per pass (dequantize launch)
    eager_attention_penalty: float = 2.0  # eager attention FLOPs run this many times slower than SDPA
    source: str = "defaults (not fitted)"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ThroughputCoefficients:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def load_throughput() -> ThroughputCoefficients:
    """The fitted time-model coefficients (data/coefficients.json "throughput"), or the defaults."""
    from ftcalc._paths import data_dir

    return _load_throughput(str(data_dir() / "coefficients.json"))


@lru_cache(maxsize=8)
def _load_throughput(path: str) -> ThroughputCoefficients:
    import json

    p = Path(path)
    if p.is_file():
        d = json.loads(p.read_text())
        if "throughput" in d:
            return ThroughputCoefficients.from_dict(d["throughput"])
    return ThroughputCoefficients()


def flops_per_token(spec: ModelSpec, opts: TrainingOptions) -> dict[str, float]:
    """Matmul FLOPs per trained token, split into dense (weights) and attention parts."""
    arch = spec.arch
    inv = inventory(arch)
    head = arch.vocab_size * arch.hidden_size
    linear = inv.linear_weight_params
    if arch.is_moe:  # only the routed experts compute
        expert = 3 * arch.hidden_size * arch.intermediate_size
        linear += arch.num_layers * arch.experts_per_token * expert
    fwd_dense = 2.0 * (linear + head)
    fwd_attn = 2.0 * arch.num_layers * opts.seq_len * arch.q_dim  # causal: half of 4*T*q_dim
    passes = 3.0 if opts.method == "full" else 2.0  # forward + backward (input and weight grads for full)
    if opts.checkpointing:
        passes += 1.0
    adapters = 6.0 * lora_params(inv, opts) if opts.uses_adapters else 0.0
    attn_passes = 3.0 + (1.0 if opts.checkpointing else 0.0)  # attention backward ~2x forward for all methods
    return {"dense": fwd_dense * passes + adapters, "attention": fwd_attn * attn_passes}


def step_seconds(spec: ModelSpec, opts: TrainingOptions, gpu: Any, tc: ThroughputCoefficients | None = None) -> float:
    """Predicted seconds for one optimizer step of one micro-batch on one GPU."""
    tc = tc or load_throughput()
    arch = spec.arch
    f = flops_per_token(spec, opts)
    eff = {"full": tc.efficiency_full, "lora": tc.efficiency_lora, "qlora": tc.efficiency_qlora}[opts.method]
    rate = gpu.bf16_dense_tflops * 1e12 * eff
    attn_penalty = tc.eager_attention_penalty if resolve_attention(arch, opts) == "eager" else 1.0
    compute = opts.tokens_per_step * (f["dense"] + f["attention"] * attn_penalty) / rate
    bw = gpu.memory_bandwidth_gbps * 1e9
    inv = inventory(arch)
    dequant = 0.0
    if opts.method == "qlora":
        uses = 2 + (1 if opts.checkpointing else 0)  # forward, backward (+ recompute)
        dequant = inv.linear_weight_params * 2.5 * uses / (bw * tc.dequant_bandwidth_share)
    if opts.method == "full":
        p = 2 if opts.precision == "bf16-true" else 4
        opt_bytes = inv.total_params * (3 * p + 2 * p + 2 * p)  # read p, g, m, v; write p, m, v
    else:
        opt_bytes = lora_params(inv, opts) * 4 * 7
    passes = 2 + (1 if opts.checkpointing else 0)  # forward, backward, recompute
    per_layer = tc.layer_overhead_s
    if opts.uses_adapters:
        per_layer += tc.lora_module_overhead_s * sum(g.count for g in inv.linears if g.kind in opts.lora_targets) / arch.num_layers
    if opts.method == "qlora":
        per_layer += tc.qlora_module_overhead_s * sum(g.count for g in inv.linears) / arch.num_layers
    return compute + dequant + opt_bytes / bw + arch.num_layers * passes * per_layer


def tokens_per_second(spec: ModelSpec, opts: TrainingOptions, gpu: Any, tc: ThroughputCoefficients | None = None) -> float:
    """Trained tokens per second per GPU (all tokens counted, no padding)."""
    return opts.tokens_per_step / step_seconds(spec, opts, gpu, tc)


def with_values(tc: ThroughputCoefficients, **kw: float) -> ThroughputCoefficients:
    return replace(tc, **kw)
