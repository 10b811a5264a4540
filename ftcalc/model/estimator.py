"""``ftcalc.estimate(...)``: the memory (and, with a GPU, speed) of one fine-tuning configuration.

    import ftcalc
    est = ftcalc.estimate("8b", method="qlora", seq_len=4096, batch_size=2, gpu="h100")
    est.device_used_bytes, est.fits, est.to_dataframe()

Same arguments as ``ftcalc estimate``; no torch is imported.
"""

from __future__ import annotations

import html
from typing import Any

from pydantic import BaseModel, ConfigDict

from ftcalc._paths import coefficients_label
from ftcalc.errors import InvalidArgumentError
from ftcalc.model.memory import (
    Coefficients,
    checkpoint_options,
    checkpoint_refusal,
    checkpoint_unvalidated,
    estimate_memory,
    expert_lora_targeted,
    kv_cache_bytes,
    load_coefficients,
    resolve_attention,
    vision_lora_params,
)
from ftcalc.model.options import DEFAULTS, TrainingOptions, make_options
from ftcalc.sizes import GB, GIB
from ftcalc.tables.catalog import ModelSpec, resolve_model
from ftcalc.tables.inventory import inventory
from ftcalc.validation import epochs as check_epochs
from ftcalc.validation import param, tokens

__all__ = ["Estimate", "check_options", "estimate", "estimate_options"]

# The allocator can always give back cached blocks and retry (CUDACachingAllocator): a run whose
# allocated peak plus the memory outside the allocator stays under this share of the GPU still fits,
# near its limit, even when the predicted unconstrained reserved pool would not.
_ALLOCATED_FIT_SHARE = 0.97


class Estimate(BaseModel):
    """The result of one estimate: peak memory (allocated / reserved / device used), by component."""

    model_config = ConfigDict(frozen=True)

    model: str
    method: str
    seq_len: int
    batch_size: int
    gradient_checkpointing: bool
    optimizer: str
    precision: str
    attention: str
    loss: str
    lora_r: int | None
    num_gpus: int
    total_params: int
    trainable_params: int
    peak_allocated_bytes: int
    peak_reserved_bytes: int
    device_used_bytes: int
    peak_phase: str
    breakdown: dict[str, int]
    phases: dict[str, int]
    activation_bytes_per_token_per_layer: dict[str, float]
    eval_kv_cache_bytes: int
    gpu: str | None = None
    gpu_memory_bytes: int | None = None
    fits: bool | None = None
    headroom_bytes: int | None = None
    fit_note: str | None = None
    tokens_per_second: float | None = None
    host_launch_ratio: float | None = None  # throughput.StepParts.host_launch_ratio (with ``gpu``; HOST_BOUND_NOTE)
    hours: float | None = None
    dataset_tokens: int | None = None
    coefficients: str = ""
    coefficients_file: str = ""  # the file they were read from (ftcalc._paths.coefficients_label)
    # num_gpus > 1: per GPU under DDP (adapters) or FSDP full-shard (full fine-tuning), ftcalc.model.parallel; the
    # breakdown and the single-GPU peaks above stay one GPU's view of the whole model
    distribution: str | None = None
    per_gpu_peak_allocated_bytes: int | None = None
    per_gpu_device_used_bytes: int | None = None
    # a pre-quantized checkpoint's format (tables/quantization.py), and every part of this estimate that no
    # measurement backs ("unvalidated": the family's parts, catalog.Architecture.unvalidated_parts, the
    # checkpoint's format, a vision tower), each named; empty: the whole estimate rests on measured mechanisms
    quantization: str | None = None
    unvalidated: list[str] = []

    @property
    def host_bound(self) -> bool:
        """The step's forward + backward is bound by the host's kernel launches (tokens/s less certain)."""
        from ftcalc.model.throughput import is_host_bound

        return bool(self.host_launch_ratio and is_host_bound(self.host_launch_ratio))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def to_dataframe(self) -> Any:
        """One row per memory component (bytes, GiB, GB), plus the totals."""
        import pandas as pd

        rows = [{"component": k, "bytes": v, "GiB": v / GIB, "GB": v / GB} for k, v in self.breakdown.items()]
        for k in ("peak_allocated_bytes", "peak_reserved_bytes", "device_used_bytes"):
            v = getattr(self, k)
            rows.append({"component": k.replace("_bytes", ""), "bytes": v, "GiB": v / GIB, "GB": v / GB})
        return pd.DataFrame(rows)

    def _repr_html_(self) -> str:
        head = (f"<b>{html.escape(self.model)}</b> {self.method}, seq {self.seq_len} x batch {self.batch_size}, "
                f"{self.precision}, {self.optimizer}, checkpointing {'on' if self.gradient_checkpointing else 'off'}")
        fit = ""
        if self.gpu:
            color = "green" if self.fits else "red"
            fit = (f"<br>{html.escape(self.gpu)} ({self.gpu_memory_bytes / GIB:.1f} GiB): "
                   f"<span style='color:{color}'>{'fits' if self.fits else 'does not fit'}</span>")
        body = "".join(f"<tr><td>{html.escape(k)}</td><td style='text-align:right'>{v / GIB:.2f}</td></tr>"
                       for k, v in self.breakdown.items() if v)
        tot = "".join(f"<tr><th>{k}</th><th style='text-align:right'>{getattr(self, k + '_bytes') / GIB:.2f}</th></tr>"
                      for k in ("peak_allocated", "peak_reserved", "device_used"))
        return f"<div>{head}{fit}<table><tr><th>component</th><th>GiB</th></tr>{body}{tot}</table></div>"


def vision_unvalidated(arch: Any, opts: TrainingOptions) -> list[str]:
    """The label of a multimodal wrapper's estimate: the vision part counted (frozen) but never measured."""
    v = arch.vision
    if v is None:
        return []
    out = [f"vision tower + projector ({v.params / 1e6:,.0f} M params) counted frozen, not measured; "
           "image tokens not modelled"]
    v_lora = vision_lora_params(arch, opts)
    if v_lora:
        out.append(f"LoRA on the vision Linears the targets also match ({v_lora / 1e6:.1f} M params, as peft adds "
                   "them) counted, not measured")
    return out


def check_options(spec: ModelSpec, opts: TrainingOptions) -> None:
    """Refuse options ``spec`` cannot train (InvalidArgumentError, one line): a sequence beyond its context, LoRA
    targets it does not have, dropout on fused MoE experts (peft refuses it), a rank wider than a targeted Linear."""
    arch = spec.arch
    refusal = checkpoint_refusal(arch.quantization, opts.method, opts.precision)
    if refusal:
        raise InvalidArgumentError(refusal)
    if arch.quantization is not None and arch.quantization.format != "bnb-4bit" and opts.num_gpus > 1:
        raise InvalidArgumentError(f"{param('num_gpus')} {opts.num_gpus} on a pre-quantized checkpoint "
                                   f"({arch.quantization.label}): only one GPU is modelled; use {param('num_gpus')} 1")
    if arch.max_position_embeddings and opts.seq_len > arch.max_position_embeddings:
        raise InvalidArgumentError(
            f"{param('seq_len')} {opts.seq_len} exceeds {spec.id}'s context of {arch.max_position_embeddings} tokens"
        )
    if opts.uses_adapters:
        inv = inventory(arch)
        kinds = {g.kind for g in inv.linears}
        bad = [t for t in opts.lora_targets if t not in kinds and t != "all-linear"]
        if bad:
            raise InvalidArgumentError(
                f"{param('lora_targets')} {','.join(bad)}: not a Linear of {spec.id} (it has {', '.join(sorted(kinds))})"
            )
        if expert_lora_targeted(inv, opts) and opts.lora_dropout > 0:
            raise InvalidArgumentError(
                f"{param('lora_targets')} all-linear on {spec.id}: peft also adapts the fused MoE expert tensors "
                f"(lora.ParamWrapper), which refuses lora_dropout {opts.lora_dropout}; use {param('lora_dropout')} 0, "
                f"or {param('lora_targets')} q_proj,k_proj,v_proj,o_proj for attention only")
        width = min(min(g.in_features, g.out_features) for g in inv.linears if opts.is_target(g.kind))
        if opts.lora_r > width:
            raise InvalidArgumentError(f"{param('lora_r')} {opts.lora_r} exceeds the narrowest targeted layer width ({width})")


def estimate_options(spec: ModelSpec, opts: TrainingOptions, gpu: str | None = None,
                     coeffs: Coefficients | None = None, dataset_tokens: int | None = None,
                     epochs: float = 1.0) -> Estimate:
    """Estimate for an already-resolved model and validated options (the fast path used by sweeps)."""
    arch = spec.arch
    check_options(spec, opts)
    opts = checkpoint_options(arch.quantization, opts)  # LoRA on a bnb 4-bit checkpoint is QLoRA
    epochs = check_epochs(epochs, "epochs")
    if dataset_tokens is not None:
        dataset_tokens = tokens(dataset_tokens, "dataset_tokens")
    inv = inventory(arch)
    c = coeffs or load_coefficients()
    gpu_obj = None
    if gpu:
        from ftcalc.tables.hardware import get_gpu

        gpu_obj = get_gpu(gpu)
        if opts.num_gpus > gpu_obj.max_gpus_per_node:  # num_gpus counts GPUs of one node (data/gpus.csv)
            raise InvalidArgumentError(f"{param('num_gpus')} {opts.num_gpus}: a {gpu_obj.gpu} node holds at most "
                                       f"{gpu_obj.max_gpus_per_node} GPUs (data/gpus.csv); ftcalc plans one node")
    cap = gpu_obj.memory_bytes if gpu_obj else None
    mem = estimate_memory(arch, inv, opts, c, fragmentation="simulated")  # unconstrained: what the run would use on a large enough GPU
    fits = headroom = note = par = None
    if opts.num_gpus > 1:  # per GPU under data parallelism (docs/multi-gpu.md)
        from ftcalc.model.parallel import default_strategy, estimate_parallel

        strategy = default_strategy(spec, opts, gpu_obj.gpu if gpu_obj else None, opts.num_gpus)
        # memory per GPU does not depend on the GPU; without one its time (computed for an H100) goes unused
        par = estimate_parallel(spec, opts, gpu_obj.gpu if gpu_obj else "h100", strategy, opts.num_gpus)
    if gpu_obj is not None and par is not None:
        headroom = int(cap - par.device_used_bytes)
        fits = headroom >= 0
        if not fits:
            note = f"needs {par.device_used_bytes / GB:.1f} GB per GPU under {par.strategy}, the GPU has {cap / GB:.1f} GB"
    elif gpu_obj is not None:
        headroom = int(cap - mem.device_used_bytes)
        if headroom >= 0:
            fits = True
        else:
            needed = mem.peak_allocated_bytes + mem.outside_allocator_bytes
            fits = needed <= _ALLOCATED_FIT_SHARE * cap
            if fits:  # the pool is capped by the GPU: the allocator frees cached blocks and retries
                mem = estimate_memory(arch, inv, opts, c, gpu_memory_bytes=cap, fragmentation="simulated")
                headroom = int(cap - mem.device_used_bytes)  # of the capped pool, not of the unconstrained one
                note = "near the limit: the allocator will have to free cached blocks and retry"
            else:
                note = f"needs {mem.device_used_bytes / GB:.1f} GB, the GPU has {cap / GB:.1f} GB"
    tps = hours = launch_ratio = None
    if gpu_obj is not None:  # speed even when it does not fit (plan uses it for the multi-GPU case); the CLI hides it
        from ftcalc.model.throughput import step_parts

        if par is not None:
            tps, launch_ratio = par.tokens_per_second_per_gpu, par.host_launch_ratio
        else:
            parts = step_parts(spec, opts, gpu_obj)
            tps, launch_ratio = float(parts.tokens_per_second(opts)), float(parts.host_launch_ratio)
        if dataset_tokens:
            hours = dataset_tokens * epochs / (tps * opts.num_gpus) / 3600
    attn = resolve_attention(arch, opts)
    return Estimate(
        model=spec.id, method=opts.method, seq_len=opts.seq_len, batch_size=opts.batch_size,
        gradient_checkpointing=opts.checkpointing, optimizer=opts.optimizer, precision=opts.precision,
        attention=attn, loss=opts.loss, lora_r=opts.lora_r if opts.uses_adapters else None,
        num_gpus=opts.num_gpus, total_params=mem.total_params, trainable_params=mem.trainable_params,
        peak_allocated_bytes=int(mem.peak_allocated_bytes), peak_reserved_bytes=int(mem.peak_reserved_bytes),
        device_used_bytes=int(mem.device_used_bytes), peak_phase=mem.peak_phase,
        breakdown={k: int(v) for k, v in mem.breakdown.items()},
        phases={k: int(v) for k, v in mem.phases.items()},
        activation_bytes_per_token_per_layer=mem.activation_per_token_per_layer,
        eval_kv_cache_bytes=int(kv_cache_bytes(arch, opts.batch_size, opts.seq_len)),
        gpu=gpu_obj.gpu if gpu_obj else None, gpu_memory_bytes=cap, fits=fits, headroom_bytes=headroom,
        fit_note=note, tokens_per_second=tps, host_launch_ratio=launch_ratio, hours=hours, dataset_tokens=dataset_tokens,
        coefficients=c.source, coefficients_file=coefficients_label() if coeffs is None else "given",
        distribution=par.strategy if par else None,
        per_gpu_peak_allocated_bytes=int(par.peak_allocated_bytes) if par else None,
        per_gpu_device_used_bytes=int(par.device_used_bytes) if par else None,
        quantization=arch.quantization.label if arch.quantization else None,
        unvalidated=(list(arch.unvalidated_parts) + checkpoint_unvalidated(arch.quantization, inv)
                     + vision_unvalidated(arch, opts)),
    )


def estimate(model: str, method: str = "lora", seq_len: int = 2048, batch_size: int = 1,
             gradient_checkpointing: bool | None = None, optimizer: str = "adamw_torch",
             precision: str = "bf16-true", lora_r: int = DEFAULTS.lora_r, lora_alpha: float = DEFAULTS.lora_alpha,
             lora_dropout: float = DEFAULTS.lora_dropout,
             lora_targets: str | tuple[str, ...] = "all-linear", attention: str = "auto", loss: str = "standard",
             gpu: str | None = None, num_gpus: int = 1, dataset_tokens: int | None = None,
             epochs: float = 1.0) -> Estimate:
    """Estimate GPU memory for fine-tuning ``model``.

    Args:
        model: catalog id or alias (``8b``, ``meta-llama/Llama-3.1-70B``), a config.json path, or a hub id.
        method: ``full``, ``lora`` or ``qlora``.
        seq_len, batch_size: tokens per sequence and sequences per micro-batch (per GPU).
        gradient_checkpointing: None = on for lora/qlora, off for full.
        optimizer, precision, lora_*, attention, loss: see ``ftcalc estimate --help``.
        gpu: a GPU slug or alias (``h100``); adds ``fits``, ``headroom_bytes`` and ``tokens_per_second``.
        num_gpus: data-parallel GPUs of one node: adds the per-GPU memory under DDP (LoRA, QLoRA) or FSDP
            full-shard (full fine-tuning, and LoRA whose replica does not fit the GPU),
            ``per_gpu_device_used_bytes`` (ftcalc.model.parallel.default_strategy), which ``fits`` and the speed use.
        dataset_tokens, epochs: with ``gpu``, adds ``hours``.
    Returns:
        An :class:`Estimate`.
    Raises:
        UnknownModelError, UnknownGPUError, InvalidArgumentError, ConfigError.
    Example:
        >>> ftcalc.estimate("8b", method="lora", seq_len=2048).device_used_bytes > 16e9
        True
    """
    opts = make_options(method=method, seq_len=seq_len, batch_size=batch_size,
                        gradient_checkpointing=gradient_checkpointing, optimizer=optimizer, precision=precision,
                        lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout, lora_targets=lora_targets,
                        attention=attention, loss=loss, num_gpus=num_gpus)
    return estimate_options(resolve_model(model), opts, gpu=gpu, dataset_tokens=dataset_tokens, epochs=epochs)
