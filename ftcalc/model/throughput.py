"""The time model: FLOPs per trained token over an achieved rate, memory-bound work, and host launch time.

    ftcalc estimate --model 8b --method qlora --gpu h100 --dataset-tokens 50M

A step of the recipe (ftcalc/train/recipe.py, the loop ``ftcalc profile`` times) has two phases, separated by the
read of the loss, which waits for the backward to finish:

forward + backward (each micro-batch)  = overlap(GPU time, CPU launch time)
    GPU time  = FLOPs / (efficiency x dense bf16 peak)                  (compute)
              + QLoRA dequantization bytes / memory bandwidth            (4-bit weights -> bf16, each use)
              + other memory-bound bytes (eager attention scores, autocast weight casts, MoE expert LoRA)
    CPU time  = decoder layers x passes x per-layer launch cost           (norms, RoPE, LoRA modules: small kernels)
    overlap(g, c) = (g^p + c^p)^(1/p): the GPU runs asynchronously behind the Python thread, so the phase takes
    about the longer of the two (small batches are launch-bound);
optimizer update (once per step)        = optimizer bytes / memory bandwidth + trainable tensors x per-tensor host cost
    (it starts on an idle GPU after the loss read: foreach AdamW computes its bias corrections per tensor in
    Python before its kernels, bitsandbytes launches per tensor).

Measured on plan j (data/measurements/runs-h200x2-j.jsonl, ``step_phase_seconds``): at 128 tokens the
forward + backward is launch-bound (Llama-3.2-3B with checkpointing: 0.17 s, 2.05 ms per layer and pass), and
the update adds after it (3B foreach AdamW 0.040 s, 8B 8-bit AdamW 0.23 s). Under DDP the gradient all-reduce
of the last micro-batch is exposed in full, launch-bound backward or not (ftcalc.model.sharding.step_seconds_parallel).

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

from ftcalc.model.memory import expert_lora_bytes, lora_params, resolve_attention
from ftcalc.model.options import TrainingOptions
from ftcalc.tables.catalog import ModelSpec
from ftcalc.tables.inventory import inventory

__all__ = ["HOST_BOUND_NOTE", "ThroughputCoefficients", "StepParts", "flops_per_token", "step_parts", "step_seconds", "tokens_per_second",
           "load_throughput", "overlap", "trainable_tensors", "is_host_bound"]

# said of a configuration whose forward + backward is bound by the host's kernel launches (StepParts.cpu_s >
# gpu_s): one such step, Llama-3.2-3B full fine-tuning at 1024 tokens per GPU with DDP on 4 H200s, took 0.225,
# 0.277 and 0.310 s on three machines of one kind (runs m-000, i-003, p-000), and on one machine its one-GPU
# twin 0.184 s and 0.243 s two minutes apart (q-001; docs/notes/time-model.md). The launches are per
# micro-batch, the GPU's work per token: a larger micro-batch moves the step toward GPU-bound
HOST_BOUND_NOTE = ("host-bound: the GPU waits on the host's kernel launches; such steps ran up to 38 % slower "
                   "on some machines than on others of the same kind, and varied on one machine; a larger "
                   "micro-batch, where it fits, moves the step toward GPU-bound")
# between NEAR_HOST_BOUND_RATIO and 1 the step is GPU-bound by the model but the host's launches take most of the
# GPU's time: on the 5 multi-GPU runs in that band (through plans y and z) tokens/s was off by 7.6 % median,
# 22 % at worst (z-004; its repeat on another machine: 7.6 %), against 3 % median below it
NEAR_HOST_BOUND_RATIO = 0.8
NEAR_HOST_BOUND_NOTE = ("near host-bound: the host's kernel launches take most of the GPU's time, so a slower host "
                        "slows the step (measured on such steps: up to 22 % slower than predicted); a larger "
                        "micro-batch, where it fits, makes it less sensitive")


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
    efficiency_half_hidden: float = 1024.0  # matmul efficiency ~ hidden / (hidden + this): small models run less efficiently
    norm_overhead_s: float = 0.0001  # per RMSNorm per pass (fp32 upcast, several small kernels)
    fp32_rate_ratio: float = 0.068  # 32-true: fp32 matmuls without TF32 (H100 SXM datasheet 67 / 989 TFLOP/s)
    eager_bytes_per_score: float = 16.0  # eager attention: bytes moved per T x T score per head per pass
    # optimizer step, bytes of memory traffic per trainable parameter (read/write of states, temporaries)
    opt_bytes_adamw: float = 18.0  # foreach AdamW on bf16 params: p, g, m, v read, p, m, v written, sqrt copy
    opt_bytes_adamw_fused: float = 14.0
    # bitsandbytes blockwise 8-bit AdamW (and its paged variant, whose states stay resident when they fit):
    # bound by arithmetic, not memory: 0.23-0.24 s per update of Llama-3-8B on both the H100 and the H200
    # (plans k, l; 3.35 vs 4.8 TB/s). It moves to other GPUs by their dense bf16 rate: an assumption, as the
    # H100 and the H200 share that rate (and their clocks and CUDA cores), so the runs cannot tell which rate
    # the kernels follow; for GPUs whose bf16 rate is low beside their CUDA cores (RTX 4090, A100) the update is
    # likely predicted too slow. FLOP-equivalents of the bf16 peak per parameter:
    opt_flops_8bit: float = 3.0e4
    opt_bytes_paged: float = 80.0  # bitsandbytes 32-bit paged AdamW, states in unified memory
    opt_fixed_paged_s: float = 0.04  # per step: paged optimizers synchronize and prefetch their pages
    opt_tensor_s: float = 2.5e-5  # per trainable tensor per update: host work (foreach AdamW's Python bias corrections)
    overlap_power: float = 4.0  # step = (gpu^p + cpu^p)^(1/p): p -> inf is perfect overlap (max), p = 1 none
    opt_bytes_adafactor: float = 40.0  # per-tensor fp32 copies
    opt_bytes_sgd: float = 6.0
    # peft ParamWrapper on fused MoE experts: memory traffic per layer per forward + backward, in units of the
    # layer's expert weights (merge W' = W + B A, its gradient, the adapters' gradients through small-rank
    # batched matmuls). Not fitted: one Mixtral-8x7B layer on an H200, 2048 tokens, no checkpointing,
    # +10.6 ms over attention-only LoRA (peft 0.21, transformers 5.17; lab/benchmarks/moe_layer_bench.py,
    # data/measurements/benchmarks/moe-layer-h200.md); 10.6 ms x 4.8 TB/s / 2.82 GB = 18
    expert_lora_traffic_stacks: float = 18.0
    # the routed experts' matmul rate over a dense MLP's of the same FLOPs: one Mixtral-8x7B layer (transformers'
    # default grouped_mm experts, routing included) against a dense layer with intermediate 2 x 14336, frozen, input
    # gradient, a checkpointed layer's three passes, on one H200: 0.70 / 0.69 / 0.72 at 4096 / 8192 / 16384 tokens
    # (lab/benchmarks/moe_rate_bench.py, data/measurements/benchmarks/moe-rate-h200.jsonl; below 4096 tokens that bench is
    # launch-bound). Not fitted
    expert_rate_ratio: float = 0.70
    # per-GPU calibration (an efficiency per GPU and method): the measured speed of the H200 runs
    # relative to the datasheet transfer from the H100 (the reference, where most runs are). Fitted; its
    # cause is not separated (clocks under load, the host CPU that launches the kernels, HBM3e bandwidth for
    # the memory-bound work the model folds into the efficiency). Unmeasured GPUs: 1.
    speed_h200: float = 1.0
    source: str = "defaults (not fitted)"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ThroughputCoefficients:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def load_throughput() -> ThroughputCoefficients:
    """The fitted time-model coefficients (data/coefficients.json "throughput"), or the defaults."""
    from ftcalc._paths import coefficients_file

    return _load_throughput(str(coefficients_file()))


@lru_cache(maxsize=8)
def _load_throughput(path: str) -> ThroughputCoefficients:

    from ftcalc.model.memory import _checked_section, read_coefficients_json

    p = Path(path)
    if p.is_file():
        d = read_coefficients_json(p)
        if "throughput" in d:
            return ThroughputCoefficients.from_dict(_checked_section(p, d["throughput"], ThroughputCoefficients,
                                                                     "throughput"))
    return ThroughputCoefficients()


def flops_per_token(spec: ModelSpec, opts: TrainingOptions) -> dict[str, float]:
    """Matmul FLOPs per trained token, split into dense (weights) and attention parts."""
    arch = spec.arch
    inv = inventory(arch)
    head = arch.vocab_size * arch.hidden_size
    linear = inv.linear_weight_params
    routed = 0.0
    if arch.is_moe:  # only the routed experts compute (shared experts and dense layers are Linears above)
        routed = (arch.moe_layer_count * arch.experts_per_token * 3 * arch.hidden_size
                  * arch.expert_intermediate_size)
    fwd_dense = 2.0 * (linear + routed + head)
    # causal: half of 2*T*qk (scores) + 2*T*v (weighted values); 2*T*q_dim for MHA/GQA
    fwd_attn = arch.num_layers * opts.seq_len * (arch.attn_qk_dim + arch.attn_v_dim)
    passes = 3.0 if opts.method == "full" else 2.0  # forward + backward (input and weight grads for full)
    if opts.checkpointing:
        passes += 1.0
    adapters = 6.0 * lora_params(inv, opts) if opts.uses_adapters else 0.0
    attn_passes = 3.0 + (1.0 if opts.checkpointing else 0.0)  # attention backward ~2x forward for all methods
    return {"dense": fwd_dense * passes + adapters, "attention": fwd_attn * attn_passes,
            "forward": fwd_dense + fwd_attn, "experts": 2.0 * routed * passes}


@dataclass(frozen=True)
class StepParts:
    """One step of one GPU in its parts (seconds, already on the GPU's speed): floats for one configuration,
    or arrays over candidates (the solver: ``take``).

    ``gpu_s`` / ``cpu_s``: one micro-batch's forward + backward on the GPU and the host's launch time for it;
    ``optimizer_s``: one optimizer update, of which ``optimizer_host_s`` is the per-tensor host work (it does not
    shrink when FSDP shards the tensors); ``power``: the overlap exponent of the two sides; ``forward_share``: the
    first forward's share of the micro-batch's GPU work (the rest is the backward, with checkpointing's recompute),
    behind which FSDP's forward all-gathers must hide (ftcalc.model.sharding.step_seconds_parallel)."""

    gpu_s: Any
    cpu_s: Any
    optimizer_s: Any
    power: float
    optimizer_host_s: Any = 0.0
    forward_share: Any = 0.25

    @property
    def micro_batch_s(self) -> Any:
        """One micro-batch's forward + backward (to the loss read)."""
        return overlap(self.gpu_s, self.cpu_s, self.power)

    @property
    def host_launch_ratio(self) -> Any:
        """The host's launch time of a micro-batch's forward + backward over the GPU's time for it."""
        return self.cpu_s / self.gpu_s

    @property
    def host_bound(self) -> Any:
        """The forward + backward waits on the host's launches, not on the GPU (HOST_BOUND_NOTE)."""
        return is_host_bound(self.host_launch_ratio)

    def per_micro_batch_s(self, grad_accum: Any) -> Any:
        """Seconds per micro-batch, the optimizer update's share included (one per ``grad_accum`` micro-batches)."""
        return self.micro_batch_s + self.optimizer_s / grad_accum

    def tokens_per_second(self, opts: TrainingOptions) -> Any:
        """Trained tokens per second of ``opts`` (whose step these are the parts of), all tokens counted."""
        return opts.tokens_per_step / self.per_micro_batch_s(opts.gradient_accumulation_steps)

    def take(self, *index: Any) -> StepParts:
        """The parts at ``index`` of array-valued parts."""
        import numpy as np

        def at(v: Any) -> Any:
            return np.broadcast_to(np.asarray(v, dtype=float), np.shape(self.optimizer_s))[index]

        return replace(self, gpu_s=np.asarray(self.gpu_s)[index], cpu_s=np.asarray(self.cpu_s)[index],
                       optimizer_s=np.asarray(self.optimizer_s)[index], optimizer_host_s=at(self.optimizer_host_s),
                       forward_share=at(self.forward_share))


def host_note(host_launch_ratio: float | None) -> str | None:
    """What to tell the user about the host's share of a step: HOST_BOUND_NOTE above 1, NEAR_HOST_BOUND_NOTE from
    NEAR_HOST_BOUND_RATIO to 1, nothing below (or without a ratio)."""
    if not host_launch_ratio:
        return None
    if is_host_bound(host_launch_ratio):
        return HOST_BOUND_NOTE
    return NEAR_HOST_BOUND_NOTE if host_launch_ratio > NEAR_HOST_BOUND_RATIO else None


def is_host_bound(host_launch_ratio: Any) -> Any:
    """Whether a forward + backward with this host launch time / GPU time is bound by the host (HOST_BOUND_NOTE)."""
    return host_launch_ratio > 1.0


def overlap(gpu_s: Any, cpu_s: Any, power: float) -> Any:
    """The duration of GPU work queued by a host thread that launches it: (g^p + c^p)^(1/p), between the
    longer of the two (p -> infinity: perfect overlap) and their sum (p = 1)."""
    return (gpu_s**power + cpu_s**power) ** (1.0 / power)


def trainable_tensors(spec: ModelSpec, opts: TrainingOptions) -> int:
    """Trainable parameter tensors: what per-tensor optimizer work (and launches) scales with."""
    arch = spec.arch
    inv = inventory(arch)
    if opts.uses_adapters:  # lora_A and lora_B of every targeted Linear
        return 2 * sum(g.count for g in inv.linears if opts.is_target(g.kind))
    n = sum(g.count * (2 if g.bias else 1) for g in inv.linears)
    if arch.is_moe:  # fused gate_up and down expert tensors and the router, per MoE layer
        n += 3 * arch.moe_layer_count
    norms = arch.num_layers * (arch.norms_per_layer + (2 if arch.qk_norm else 0)) + 1
    return n + norms + (1 if inv.tied_embeddings else 2)


def adapter_path_bytes(opts: TrainingOptions) -> dict[str, float]:
    """Bytes moved per element of an adapted Linear's input (``in_``) and output (``out_``), in the forward and in the
    backward, by the adapter path peft adds beside the frozen Linear (peft 0.21 ``lora.Linear.forward`` and, for
    4-bit bases, ``lora.bnb.Linear4bit.forward``): every elementwise op reads its operands and writes its result once;
    the rank-r matmuls read the big operand (x into lora_A, the output gradient out of lora_B, twice in the backward:
    input and weight gradients) and write the big result (lora_B's output); their rank-sized sides are left out.
    Counted op by op, not fitted. Plan y's pairs of runs that differ only in the adapted Linears
    measured this cost (docs/notes/time-model.md).

    - LoRA, bf16-true (fp32 adapters, bf16 activations, no autocast): x cast to fp32 (2 + 4), dropout (4 + 4 + a 1-byte
      mask), lora_A reads x (4); lora_B writes fp32 (4), the scaling (4 + 4), the sum with the bf16 base result into
      fp32 (2 + 4 + 4), cast back to bf16 (4 + 2). Backward: lora_A's input and weight gradients (4 + 4), dropout
      (4 + 1 + 4), the cast (4 + 2), the sum with the base path's input gradient (2 + 2 + 2); out: the casts
      (2 + 4, 4 + 2), the scaling (4 + 4), lora_B's two gradients read the output gradient (4 + 4).
    - QLoRA as peft prepares it (fp32 activations, fp32 adapters, 4-bit base): no input cast; the 4-bit result is
      cloned (4 + 4) before the sum (4 + 4 + 4); the input gradients are summed in fp32 (4 + 4 + 4).
    - Sharded QLoRA (bf16 everything, 4-bit base): the same ops as peft's QLoRA at 2 bytes per element.
    - bf16-mixed LoRA (autocast): fp32 x and dropout as bf16-true, autocast casts x back to bf16 for lora_A (4 + 2),
      lora_B's output and the sum are bf16.
    """
    d = 1.0 if opts.lora_dropout > 0 else 0.0
    if opts.sharded_qlora:
        return {"in_fwd": 2 + 5 * d, "in_bwd": 10 + 5 * d, "out_fwd": 16.0, "out_bwd": 8.0}
    if opts.method == "qlora" or opts.precision == "32-true":  # fp32 activations and adapters
        clone = 8.0 if opts.method == "qlora" else 0.0  # peft's defensive clone of the 4-bit result
        return {"in_fwd": 4 + 9 * d, "in_bwd": 20 + 9 * d, "out_fwd": 24.0 + clone, "out_bwd": 16.0}
    if opts.precision == "bf16-mixed":
        return {"in_fwd": 14 + 9 * d, "in_bwd": 22 + 9 * d, "out_fwd": 12.0, "out_bwd": 8.0}
    return {"in_fwd": 10 + 9 * d, "in_bwd": 20 + 9 * d, "out_fwd": 28.0, "out_bwd": 28.0}


def step_parts(spec: ModelSpec, opts: TrainingOptions, gpu: Any, tc: ThroughputCoefficients | None = None) -> StepParts:
    """The parts of one step on one GPU: forward + backward of a micro-batch (GPU and host sides) and the update."""
    tc = tc or load_throughput()
    arch = spec.arch
    f = flops_per_token(spec, opts)
    # QLoRA as peft prepares it (one GPU, DDP) runs its residual stream, norms and adapters in fp32
    # (efficiency_qlora, fitted on such runs); sharded QLoRA (FSDP) keeps everything but the 4-bit weights in
    # bf16, as LoRA does: LoRA's rate, plus the dequantization traffic below
    eff = {"full": tc.efficiency_full, "lora": tc.efficiency_lora,
           "qlora": tc.efficiency_qlora if opts.fp32_upcast else tc.efficiency_lora}[opts.method]
    eff *= arch.hidden_size / (arch.hidden_size + tc.efficiency_half_hidden)
    rate = gpu.bf16_dense_tflops * 1e12 * eff
    if opts.precision == "32-true":
        rate *= tc.fp32_rate_ratio
    # the routed experts' grouped matmuls run at expert_rate_ratio of the dense rate (the dense part holds them once)
    experts_extra = f["experts"] * (1.0 / tc.expert_rate_ratio - 1.0)
    compute = opts.tokens_per_step * (f["dense"] + f["attention"] + experts_extra) / rate
    bw = gpu.memory_bandwidth_gbps * 1e9
    inv = inventory(arch)
    targeted = [g for g in inv.linears if opts.is_target(g.kind)] if opts.uses_adapters else []  # adapted Linears
    passes = 2 + (1 if opts.checkpointing else 0)  # forward, backward, recompute
    traffic = 0.0
    if resolve_attention(arch, opts) == "eager":  # T x T scores written and read in fp32 and bf16
        traffic += (arch.num_layers * opts.batch_size * arch.num_heads * opts.seq_len ** 2
                    * tc.eager_bytes_per_score * passes)
    if opts.method == "qlora":  # 4-bit weights dequantized to bf16 at every use (forward, backward, recompute)
        traffic += inv.linear_weight_params * 2.5 * passes / tc.dequant_bandwidth_share
    if opts.precision == "bf16-mixed" and opts.method != "qlora":  # autocast casts fp32 weights to bf16
        traffic += inv.linear_weight_params * 6.0 * passes
    if opts.uses_adapters:  # the adapter path around each adapted Linear, in bytes (adapter_path_bytes)
        ab = adapter_path_bytes(opts)
        fwd_passes = 2.0 if opts.checkpointing else 1.0  # the forward, again in the recompute
        inputs = sum(g.count * g.in_features for g in targeted)
        outputs = sum(g.count * g.out_features for g in targeted)
        traffic += opts.tokens_per_step * (inputs * (fwd_passes * ab["in_fwd"] + ab["in_bwd"])
                                           + outputs * (fwd_passes * ab["out_fwd"] + ab["out_bwd"]))
    moe = expert_lora_bytes(inv, opts)["per_layer_saved"]
    if moe:  # checkpointing repeats the forward's merge (about a third of the traffic, an assumption)
        traffic += arch.num_layers * tc.expert_lora_traffic_stacks * moe * (4.0 / 3.0 if opts.checkpointing else 1.0)
    per_layer = tc.layer_overhead_s + tc.norm_overhead_s * (arch.norms_per_layer + (2 if arch.qk_norm else 0))
    if opts.uses_adapters:
        per_layer += tc.lora_module_overhead_s * sum(g.count for g in targeted) / arch.num_layers
    if opts.method == "qlora":
        per_layer += tc.qlora_module_overhead_s * sum(g.count for g in inv.linears) / arch.num_layers
    # the optimizer update: its states' memory traffic, the host's per-tensor work, paged optimizers' sync
    n_train = inv.total_params if opts.method == "full" else lora_params(inv, opts)
    if opts.optimizer in ("adamw_8bit", "paged_adamw_8bit"):
        update = n_train * tc.opt_flops_8bit / (gpu.bf16_dense_tflops * 1e12)
    else:
        per_param = {"adamw_torch": tc.opt_bytes_adamw, "adamw_torch_fused": tc.opt_bytes_adamw_fused,
                     "paged_adamw_32bit": tc.opt_bytes_paged, "adafactor": tc.opt_bytes_adafactor,
                     "sgd": tc.opt_bytes_sgd}[opts.optimizer]
        update = n_train * per_param / bw
    host = trainable_tensors(spec, opts) * tc.opt_tensor_s
    update += host
    if opts.optimizer.startswith("paged"):
        update += tc.opt_fixed_paged_s
    # per-GPU speed calibration (H200 runs vs the datasheet transfer from the H100)
    scale = 1.0 / tc.speed_h200 if getattr(gpu, "gpu", None) == "h200" else 1.0
    # the first forward's share of the GPU work: its matmuls over all of them (the memory traffic above is
    # spread over the passes alike)
    forward_share = f["forward"] / (f["dense"] + f["attention"])
    return StepParts(gpu_s=(compute + traffic / bw) * scale, cpu_s=arch.num_layers * passes * per_layer * scale,
                     optimizer_s=update * scale, power=tc.overlap_power, optimizer_host_s=host * scale,
                     forward_share=forward_share)


def step_seconds(spec: ModelSpec, opts: TrainingOptions, gpu: Any, tc: ThroughputCoefficients | None = None) -> float:
    """Predicted seconds per micro-batch on one GPU, the optimizer update's share included (one update per
    ``gradient_accumulation_steps`` micro-batches)."""
    return step_parts(spec, opts, gpu, tc).per_micro_batch_s(opts.gradient_accumulation_steps)


def tokens_per_second(spec: ModelSpec, opts: TrainingOptions, gpu: Any, tc: ThroughputCoefficients | None = None) -> float:
    """Trained tokens per second per GPU (all tokens counted, no padding)."""
    return step_parts(spec, opts, gpu, tc).tokens_per_second(opts)

