"""One multi-GPU configuration, estimated: memory per GPU and tokens/s under DDP or FSDP on N GPUs of a node.

    >>> from ftcalc.model.parallel import estimate_parallel
    >>> e = estimate_parallel("llama-3-70b", make_options(method="lora", seq_len=4096), "h200", "fsdp", 2)
    >>> e.device_used_bytes / 2**30, e.tokens_per_second

The same formulas the solver evaluates for every multi-GPU candidate (ftcalc/model/sharding.py), for one
configuration, so that a measured multi-GPU run (data/measurements, rows with ``num_gpus`` > 1) can be
compared with its prediction (``ftcalc validate --multi-gpu``, docs/multi-gpu.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from ftcalc.errors import InvalidArgumentError
from ftcalc.model.options import TrainingOptions
from ftcalc.tables.catalog import ModelSpec, resolve_model
from ftcalc.tables.hardware import get_gpu

__all__ = ["ParallelEstimate", "estimate_parallel", "default_strategy", "strategy_of", "STRATEGIES",
           "simulated_fsdp_gap_bytes", "strategy_options", "fsdp_gap_simulated", "cached_fsdp_gap_bytes"]

STRATEGIES = ("single", "ddp", "fsdp", "fsdp_offload", "fsdp_grad_op")  # = ftcalc.model.sharding.SHARDINGS


@dataclass(frozen=True)
class ParallelEstimate:
    """Per-GPU memory and whole-job speed of one configuration on ``num_gpus`` GPUs."""

    model: str
    gpu: str
    strategy: str
    num_gpus: int
    device_used_bytes: float  # per GPU (the fullest rank), what nvidia-smi shows at the peak
    peak_allocated_bytes: float  # per GPU, torch.cuda.max_memory_allocated
    step_seconds: float  # one optimizer step (all micro-batches of the accumulation)
    compute_seconds: float  # the part of it that is not exposed communication
    tokens_per_second: float  # all GPUs together
    tokens_per_second_per_gpu: float
    scaling_efficiency: float  # compute_seconds / step_seconds
    host_launch_ratio: float = 0.0  # throughput.StepParts.host_launch_ratio of one micro-batch (HOST_BOUND_NOTE)

    @property
    def host_bound(self) -> bool:
        """The forward + backward is bound by the host's kernel launches, not by the GPU."""
        from ftcalc.model.throughput import is_host_bound

        return bool(is_host_bound(self.host_launch_ratio))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_parallel(model: str | ModelSpec, opts: TrainingOptions, gpu: str, strategy: str, num_gpus: int,
                      num_instances: int = 1) -> ParallelEstimate:
    """Memory per GPU and tokens/s of ``opts`` (its micro-batch and gradient accumulation per GPU) on
    ``num_gpus`` GPUs with ``strategy`` (``ddp``, ``fsdp`` full-shard, ``fsdp_offload``, ``fsdp_grad_op``
    (FSDP2 ``reshard_after_forward=False``, about ZeRO-2: not yet measured), or ``single``)."""
    import numpy as np

    from ftcalc.model import sharding as sh
    from ftcalc.model.grid import config_grid, micro_batch_times

    if strategy not in STRATEGIES:
        raise InvalidArgumentError(f"strategy '{strategy}': expected one of {', '.join(STRATEGIES)}")
    if strategy == "single" and num_gpus != 1:
        raise InvalidArgumentError("strategy single runs on one GPU; use ddp or fsdp for several")
    if opts.method == "qlora" and strategy == "fsdp_offload":
        raise InvalidArgumentError("strategy fsdp_offload with qlora: the recipe does not offload 4-bit weights "
                                   "(bitsandbytes re-quantizes weights moved to the GPU); use fsdp or ddp")
    opts = strategy_options(opts, strategy)
    spec = model if isinstance(model, ModelSpec) else resolve_model(model)
    g = get_gpu(gpu)
    a = sh.load_assumptions()
    # the byte counts of one micro-batch; the accumulation (gradients alive from the second micro-batch on) is
    # the sharding functions' part, as in the solver: a grid built with ga > 1 would count them twice
    one_micro = opts.model_copy(update={"gradient_accumulation_steps": 1})
    opts_list, st = config_grid(spec, one_micro, [opts.method], [opts.batch_size], opts.batch_size,
                                 checkpointing=(opts.checkpointing,))
    one = st.take(np.array([0]))
    if strategy in ("fsdp", "fsdp_grad_op"):
        gap = simulated_fsdp_gap_bytes(spec, opts, num_gpus, strategy == "fsdp")
        if gap is not None:
            one = replace(one, gap_fsdp=np.array([gap]))
    code = STRATEGIES.index(strategy)
    ga = opts.gradient_accumulation_steps
    used = sh.device_used_per_gpu(one, np.array([code]), np.array([float(num_gpus)]), np.array([ga]),
                                  a.nccl_buffer_bytes)
    alloc = sh.allocated_per_gpu(one, np.array([code]), np.array([float(num_gpus)]), np.array([ga]))
    times = micro_batch_times(spec, opts_list, [g]).take(0, 0)
    bw = sh.comm_bandwidth_bytes_per_s(g.interconnect_gbps, sh.link_efficiency(g.interconnect, a), g.p2p,
                                       num_instances, a)
    step, compute = sh.step_seconds_parallel(
        times, code, num_gpus, ga, float(one.gathered_weights[0]), float(one.grads[0]),
        float(one.trainable_params[0]), num_instances, bw, a, units=float(one.units[0]),
        untie=float(one.untie_trainable(code)[0]), memory_bandwidth_bytes_per_s=g.memory_bandwidth_gbps * 1e9)
    per_gpu = opts.tokens_per_step * ga / step
    return ParallelEstimate(model=spec.id, gpu=g.gpu, strategy=strategy, num_gpus=num_gpus,
                            device_used_bytes=float(np.asarray(used).ravel()[0]),
                            peak_allocated_bytes=float(np.asarray(alloc).ravel()[0]), step_seconds=float(step),
                            compute_seconds=float(compute), tokens_per_second=per_gpu * num_gpus,
                            tokens_per_second_per_gpu=per_gpu, scaling_efficiency=float(compute / step),
                            host_launch_ratio=float(times.host_launch_ratio))


def strategy_options(opts: TrainingOptions, strategy: str) -> TrainingOptions:
    """``opts`` as ``strategy`` trains them: QLoRA under FSDP (full-shard, shard-grad-op) is sharded QLoRA (bf16,
    no fp32 upcast: recipe.build_model_sharded); on one GPU and under DDP it is peft's (fp32 upcast)."""
    if opts.method != "qlora":
        return opts
    return opts.model_copy(update={"qlora_fp32_upcast": strategy not in ("fsdp", "fsdp_grad_op")})


def fsdp_gap_simulated(spec: ModelSpec, opts: TrainingOptions, num_gpus: int) -> bool:
    """Whether :func:`simulated_fsdp_gap_bytes` simulates this configuration (else it returns None)."""
    from ftcalc.model.allocsim.adapter import adapter_sequence_supported
    from ftcalc.model.allocsim.fsdp import fsdp_sequence_supported

    return num_gpus >= 2 and (fsdp_sequence_supported(spec, opts) or adapter_sequence_supported(spec, opts))


def cached_fsdp_gap_bytes(spec: ModelSpec, opts: TrainingOptions, num_gpus: int,
                          reshard_after_forward: bool = True) -> float | None:
    """:func:`simulated_fsdp_gap_bytes` if this process has simulated it already, else None (no simulation)."""
    return _FSDP_GAPS.get((repr(spec.arch), opts.model_dump_json(), num_gpus, reshard_after_forward))


def simulated_fsdp_gap_bytes(spec: ModelSpec, opts: TrainingOptions, num_gpus: int,
                             reshard_after_forward: bool = True) -> float | None:
    """Peak reserved - peak allocated of one FSDP2 rank, from its simulated three-stream allocation sequence
    (ftcalc/model/allocsim/fsdp.py: all-gather buffers, gradient shards on the reduce-scatter stream, the
    compute stream's own fragmentation); None where the sequence does not cover the configuration
    (``fsdp_sequence_supported``: full fine-tuning of untied decoders). About 0.1 s, cached."""
    from ftcalc.model.allocsim.adapter import adapter_sequence_supported, simulate_adapter_fsdp
    from ftcalc.model.allocsim.fsdp import fsdp_sequence_supported, simulate_fsdp

    if num_gpus < 2:
        return None
    if fsdp_sequence_supported(spec, opts):
        sim = simulate_fsdp
    elif adapter_sequence_supported(spec, opts):
        sim = simulate_adapter_fsdp
    else:
        return None

    # keyed on the architecture itself (a config edited in memory is another model than its catalog id)
    key = (repr(spec.arch), opts.model_dump_json(), num_gpus, reshard_after_forward)
    if key not in _FSDP_GAPS:
        if len(_FSDP_GAPS) >= 256:
            _FSDP_GAPS.pop(next(iter(_FSDP_GAPS)))
        _FSDP_GAPS[key] = float(sim(spec, opts, num_gpus, steps=2, reshard_after_forward=reshard_after_forward).gap)
    return _FSDP_GAPS[key]


_FSDP_GAPS: dict[tuple, float] = {}  # simulated_fsdp_gap_bytes' cache, oldest entry dropped past 256


def default_strategy(model: str | ModelSpec, opts: TrainingOptions, gpu: str | None, num_gpus: int) -> str:
    """What ``ftcalc plan`` and ``ftcalc estimate --num-gpus`` use: FSDP full-shard for full fine-tuning; DDP for
    LoRA and QLoRA, unless a replica does not fit the GPU (70B LoRA in bf16, 70B QLoRA on 24-48 GB GPUs), then
    FSDP (sharded QLoRA for QLoRA)."""
    if num_gpus <= 1:
        return "single"
    if opts.method == "full":
        return "fsdp"
    if not gpu:
        return "ddp"
    ddp = estimate_parallel(model, opts, gpu, "ddp", num_gpus)
    return "ddp" if ddp.device_used_bytes <= get_gpu(gpu).memory_bytes else "fsdp"


def strategy_of(distribution: str, offload_params: bool = False, reshard_after_forward: bool = True) -> str:
    """The ``estimate_parallel`` strategy of a spec's or a measured row's distribution settings."""
    if distribution != "fsdp":
        return distribution
    if offload_params:
        return "fsdp_offload"
    return "fsdp" if reshard_after_forward else "fsdp_grad_op"
