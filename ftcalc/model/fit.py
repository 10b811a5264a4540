"""Inverse questions: the most that fits on a GPU, and the least GPU that fits.

    ftcalc fit --model 8b --method qlora --gpu rtx-4090 --maximize seq-len
    ftcalc fit --model 70b --method qlora --seq-len 8192 --batch-size 1 --minimize gpu

``max_fit`` searches by bisection on the monotone estimate (memory never decreases in sequence length,
batch size or LoRA rank: tests/model/test_memory.py checks it with hypothesis); ``min_gpu`` walks the GPU table
smallest memory first. "Fits" means the predicted device memory stays under the GPU's memory minus the
headroom (default 5%: the allocator needs room to move, and full fine-tuning's fragmentation is
under-predicted by up to 11% on our runs, docs/validation.md).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from ftcalc.errors import DoesNotFitError, InvalidArgumentError
from ftcalc.model.memory import Coefficients, MemoryEstimate, estimate_memory, load_coefficients
from ftcalc.model.options import TrainingOptions
from ftcalc.sizes import GIB
from ftcalc.tables.catalog import ModelSpec, resolve_model
from ftcalc.tables.hardware import GPU, get_gpu, load_gpus
from ftcalc.tables.inventory import inventory
from ftcalc.validation import param, positive_int, share

__all__ = ["FitPoint", "MaxFit", "GPUFit", "MinGPU", "max_fit", "min_gpu"]

_TARGET_FIELD = {"seq-len": "seq_len", "batch-size": "batch_size", "lora-r": "lora_r"}


class FitPoint(BaseModel):
    value: int
    device_used_bytes: int
    peak_allocated_bytes: int
    fits: bool
    dominant_component: str
    breakdown: dict[str, int]


class MaxFit(BaseModel):
    """The largest value of ``target`` that fits, the estimate there, and at the next step up."""

    model: str
    method: str
    gpu: str
    gpu_memory_bytes: int
    headroom: float
    target: str
    best: FitPoint
    next_step: FitPoint | None
    limit_reason: str

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def to_dataframe(self) -> Any:
        """Two rows (the best value and the next step up), memory components as columns (bytes)."""
        import pandas as pd

        pts = [p for p in (self.best, self.next_step) if p is not None]
        return pd.DataFrame([{self.target: p.value, "fits": p.fits, "device_used_bytes": p.device_used_bytes,
                              "dominant_component": p.dominant_component, **p.breakdown} for p in pts])

    def _repr_html_(self) -> str:
        return (f"<b>{self.model}</b> {self.method} on {self.gpu}: largest {self.target} {self.best.value} "
                f"({self.limit_reason})" + self.to_dataframe().to_html(index=False))


class GPUFit(BaseModel):
    gpu: str
    name: str
    num_gpus: int
    sharding: str = "single"
    gpu_memory_bytes: int
    device_used_bytes: int
    headroom_bytes: int


class MinGPU(BaseModel):
    model: str
    method: str
    seq_len: int
    batch_size: int
    single_gpu_device_used_bytes: int
    fitting: list[GPUFit]
    not_fitting: list[GPUFit]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def to_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame([{**r.model_dump(), "fits": ok} for ok, rows in ((True, self.fitting), (False, self.not_fitting))
                             for r in rows])

    def _repr_html_(self) -> str:
        return f"<b>{self.model}</b> {self.method}, seq {self.seq_len} x batch {self.batch_size}" + self.to_dataframe().to_html()


def _point(spec: ModelSpec, opts: TrainingOptions, c: Coefficients, budget: float, value: int) -> FitPoint:
    e: MemoryEstimate = estimate_memory(spec.arch, inventory(spec.arch), opts, c, fragmentation="simulated")
    parts = {k: v for k, v in e.breakdown.items() if k not in ("cuda_context",)}
    dominant = max(parts, key=parts.get)  # type: ignore[arg-type]
    return FitPoint(value=value, device_used_bytes=int(e.device_used_bytes), peak_allocated_bytes=int(e.peak_allocated_bytes),
                    fits=e.device_used_bytes <= budget, dominant_component=dominant,
                    breakdown={k: int(v) for k, v in e.breakdown.items()})


def max_fit(model: str | ModelSpec, opts: TrainingOptions, gpu: str | GPU, maximize: Literal["seq-len", "batch-size", "lora-r"],
            headroom: float = 0.05, coeffs: Coefficients | None = None) -> MaxFit:
    """Largest ``seq_len``, ``batch_size`` or ``lora_r`` for which ``opts`` fits on one ``gpu``.

    Raises:
        InvalidArgumentError: a target that does not apply (LoRA rank of full fine-tuning).
        DoesNotFitError: nothing fits even at the minimum value; the message names the component that
            alone exceeds the GPU, or the largest one.
    """
    spec = model if isinstance(model, ModelSpec) else resolve_model(model)
    g = gpu if isinstance(gpu, GPU) else get_gpu(gpu)
    if maximize not in _TARGET_FIELD:
        raise InvalidArgumentError(f"{param('maximize')} {maximize}: expected one of {', '.join(_TARGET_FIELD)}")
    if maximize == "lora-r" and not opts.uses_adapters:
        raise InvalidArgumentError(f"{param('maximize')} lora-r does not apply to {param('method')} {opts.method} (no adapters)")
    headroom = share(headroom, "headroom")
    c = coeffs or load_coefficients()
    budget = g.memory_bytes * (1 - headroom)
    field = _TARGET_FIELD[maximize]
    if maximize == "seq-len":
        hi_cap = spec.arch.max_position_embeddings or 1 << 20
    elif maximize == "lora-r":
        hi_cap = min(min(gr.in_features, gr.out_features) for gr in inventory(spec.arch).linears
                     if opts.is_target(gr.kind))
    else:
        hi_cap = 1 << 14

    def at(v: int) -> FitPoint:
        return _point(spec, opts.model_copy(update={field: v}), c, budget, v)

    lo_pt = at(1)
    if not lo_pt.fits:
        alone = {k: v for k, v in lo_pt.breakdown.items() if v > budget}
        comp, size = (next(iter(alone.items())) if alone else
                      max(((k, v) for k, v in lo_pt.breakdown.items()), key=lambda kv: kv[1]))
        what = "alone exceeds" if alone else "is the largest part of the total that exceeds"
        raise DoesNotFitError(
            f"{spec.id} {opts.method} does not fit on {g.gpu} even at {maximize} 1: {comp} "
            f"({size / GIB:.1f} GiB) {what} the {budget / GIB:.1f} GiB usable "
            f"(needs {lo_pt.device_used_bytes / GIB:.1f} GiB in all)"
        )
    # exponential search for a failing value, then bisection (the estimate is monotone in each target)
    lo, hi = 1, 2
    while hi <= hi_cap and at(hi).fits:
        lo, hi = hi, hi * 2
    if hi > hi_cap:
        hi = hi_cap + 1
        if at(hi_cap).fits:
            lo = hi_cap
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if at(mid).fits:
            lo = mid
        else:
            hi = mid
    best = at(lo)
    nxt = at(lo + 1) if lo < hi_cap else None
    reason = (f"the model's limit ({hi_cap})" if nxt is None else
              f"memory: {lo + 1} needs {nxt.device_used_bytes / GIB:.3f} GiB > {budget / GIB:.3f} GiB usable")
    return MaxFit(model=spec.id, method=opts.method, gpu=g.gpu, gpu_memory_bytes=g.memory_bytes, headroom=headroom,
                  target=maximize, best=best, next_step=nxt, limit_reason=reason)


def _fsdp_used(spec: ModelSpec, opts: TrainingOptions, counts: list[int]) -> dict[int, float]:
    """Per-GPU device memory under FSDP full-shard for each GPU count (ftcalc.model.sharding, docs/multi-gpu.md)."""
    from ftcalc.model import sharding as sh
    from ftcalc.model.grid import config_grid
    from ftcalc.model.parallel import strategy_options

    opts = strategy_options(opts, "fsdp")
    _, st = config_grid(spec, opts, [opts.method], [opts.batch_size], opts.batch_size,
                         checkpointing=(opts.checkpointing,))
    nccl = sh.load_assumptions().nccl_buffer_bytes
    return {n: float(sh.device_used_per_gpu(st.take(0), sh.FSDP, n, 1, nccl)) for n in counts}


def min_gpu(model: str | ModelSpec, opts: TrainingOptions, headroom: float = 0.05, max_gpus: int = 8,
            coeffs: Coefficients | None = None) -> MinGPU:
    """GPUs (smallest memory first) on which ``opts`` fits: one GPU, or else the fewest GPUs of that type
    (2, 4, 8, up to ``max_gpus`` and the node size) with FSDP full-shard. The multi-GPU figures come from
    ftcalc/model/sharding.py (validated on 2x, 4x and 8xH200: docs/multi-gpu.md)."""
    headroom = share(headroom, "headroom")
    max_gpus = positive_int(max_gpus, "max_gpus")
    spec = model if isinstance(model, ModelSpec) else resolve_model(model)
    c = coeffs or load_coefficients()
    e = estimate_memory(spec.arch, inventory(spec.arch), opts, c, fragmentation="simulated")
    counts = [n for n in (2, 4, 8) if n <= max_gpus]
    sharded = _fsdp_used(spec, opts, counts) if counts else {}
    fit, no = [], []
    for g in sorted(load_gpus().values(), key=lambda g: g.memory_bytes):
        budget = g.memory_bytes * (1 - headroom)
        row = GPUFit(gpu=g.gpu, name=g.name, num_gpus=1, gpu_memory_bytes=g.memory_bytes,
                     device_used_bytes=int(e.device_used_bytes), headroom_bytes=int(budget - e.device_used_bytes))
        if row.headroom_bytes < 0:
            for n, used in sharded.items():
                if n <= g.max_gpus_per_node and used <= budget:
                    row = GPUFit(gpu=g.gpu, name=g.name, num_gpus=n, sharding="fsdp", gpu_memory_bytes=g.memory_bytes,
                                 device_used_bytes=int(used), headroom_bytes=int(budget - used))
                    break
        (fit if row.headroom_bytes >= 0 else no).append(row)
    fit.sort(key=lambda r: (r.num_gpus * r.gpu_memory_bytes, r.gpu_memory_bytes))
    return MinGPU(model=spec.id, method=opts.method, seq_len=opts.seq_len, batch_size=opts.batch_size,
                  single_gpu_device_used_bytes=int(e.device_used_bytes), fitting=fit, not_fitting=no)
