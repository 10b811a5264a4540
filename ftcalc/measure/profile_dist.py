"""Measure one training configuration across several GPUs (DDP or FSDP2), one process per GPU.

    torchrun --standalone --nproc-per-node 2 -m ftcalc.measure.profile_dist --config '{"model": ...}' --out rows.jsonl
    python -m ftcalc.measure.profile --batch plan.jsonl --out rows.jsonl   # rows with num_gpus > 1 come here

Each rank builds the model with the shared recipe (ftcalc/train/recipe.py), wrapped the way ``ftcalc run``
wraps it (accelerate's Accelerator: DDP, or FSDP2 with one unit per decoder layer), runs ``steps``
training steps on its own random token ids, and measures its own CUDA memory statistics and device
memory in use. Rank 0 gathers the ranks and appends one row: the measurement schema of
docs/measurements.md plus ``distribution``, ``num_gpus``, ``per_rank`` (every rank's peaks), the
per-GPU peaks (the largest rank's) and ``tokens_per_second`` for all GPUs together
(``tokens_per_second_per_gpu`` per GPU).

Random weights: DDP builds the full replica on each GPU (recipe.build_model); FSDP builds on the meta
device and materializes each rank's shards only (recipe.build_model_sharded), so a model larger than
one GPU (70B in bf16) never exists whole.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

__all__ = ["profile_distributed"]


def profile_distributed(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """Run one configuration on this rank; rank 0 returns the gathered row, other ranks None."""
    import torch
    import torch.distributed as dist

    from ftcalc.measure.profile import (
        SCHEMA_VERSION,
        cuda_memory_readings,
        driver_version,
        git_commit,
        host_info,
        launch_microseconds,
        step_phases,
        versions,
        write_allocator_trace,
    )
    from ftcalc.model.options import make_options
    from ftcalc.tables.catalog import resolve_model
    from ftcalc.train import recipe

    cfg = dict(cfg)
    model_name = cfg.pop("model")
    steps = int(cfg.pop("steps", 6))
    warm = int(cfg.pop("warmup_steps", 2))
    run_id = cfg.pop("run_id", None)
    strategy = cfg.pop("distribution", "ddp")
    reshard = bool(cfg.pop("reshard_after_forward", True))
    offload = bool(cfg.pop("offload_params", False))
    trace_dir = cfg.pop("trace_dir", None)  # rank 0 records the caching allocator's trace (scripts/alloc_trace.py)
    opts = make_options(**cfg)
    spec = resolve_model(model_name)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
        torch.empty(1, device=f"cuda:{local}")  # the context
    device = f"cuda:{local}" if cuda else "cpu"
    dev = torch.device(device)
    launch_us = launch_microseconds(dev) if cuda else None
    free0, total = torch.cuda.mem_get_info(dev) if cuda else (0, 0)
    tracing = bool(trace_dir) and cuda and rank == 0
    marks: list[dict[str, Any]] = []
    if tracing:
        torch.cuda.memory._record_memory_history(enabled="all", context=None, stacks="python", max_entries=2_000_000)
    accelerator = recipe.make_accelerator(spec, strategy, reshard_after_forward=reshard, offload_params=offload)
    losses: list[float] = []
    step_times: list[float] = []
    phase_bounds: list[tuple[float, float, float]] = []
    mine: dict[str, Any] = {"rank": rank, "outcome": None, "error": None, "host_launch_us": launch_us,
                            "device_used_before_model_bytes": total - free0}
    t_load = time.perf_counter()
    model = optimizer = None
    try:
        if strategy == "fsdp":
            model = recipe.build_model_sharded(spec, opts, accelerator, device)
        else:
            model = accelerator.prepare(recipe.build_model(spec, opts, device=device, init="random"))
        optimizer = recipe.build_optimizer(model, opts)
        if cuda:
            torch.cuda.synchronize(dev)
            mine["allocated_after_load_bytes"] = torch.cuda.memory_allocated(dev)
            mine["load_peak_allocated_bytes"] = torch.cuda.max_memory_allocated(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            if tracing:
                marks.append({"name": "built", "event_index": len(torch.cuda.memory._snapshot()["device_traces"][local]),
                              "allocated": torch.cuda.memory_allocated(dev), "reserved": torch.cuda.memory_reserved(dev)})
        mine["load_seconds"] = round(time.perf_counter() - t_load, 3)
        mine["trainable_params_local"] = sum(
            (p.to_local() if hasattr(p, "to_local") else p).numel() for p in model.parameters() if p.requires_grad)
        gen = torch.Generator(device=dev).manual_seed(1000 + rank)  # each rank its own data
        for _ in range(steps):
            ids = recipe.random_batch(spec.arch.vocab_size, opts, device, generator=gen)
            dist.barrier()
            if cuda:
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            step_marks: list[float] = []
            loss = recipe.accumulated_step(model, optimizer, ids, opts, device, no_sync=accelerator.no_sync,
                                           marks=step_marks)
            if cuda:
                torch.cuda.synchronize(dev)
            t1 = time.perf_counter()
            step_times.append(t1 - t0)
            phase_bounds.append((t0, step_marks[-1], t1))
            losses.append(loss)
        mine["outcome"] = "ok"
    except torch.OutOfMemoryError as e:
        mine["outcome"] = "oom"
        mine["error"] = str(e).splitlines()[0][:300]
    except Exception as e:  # noqa: BLE001 - recorded
        mine["outcome"] = "error"
        mine["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        mine["traceback"] = traceback.format_exc()[-2000:]
    if cuda:
        mine.update(cuda_memory_readings(dev, total))
    if tracing:
        write_allocator_trace(dev, Path(trace_dir) / f"{run_id or 'trace'}.json.gz", {
            "run_id": run_id or "trace", "model": spec.id, **opts.model_dump(mode="json"), "num_gpus": world,
            "distribution": strategy, "reshard_after_forward": reshard, "steps": steps, "outcome": mine["outcome"],
            "marks": marks})
    mine["step_seconds"] = [round(s, 5) for s in step_times]
    mine["step_phase_seconds"] = step_phases(*map(list, zip(*phase_bounds, strict=True))) if phase_bounds else []
    mine["losses"] = [round(v, 4) for v in losses]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, mine)
    if rank != 0:
        return None
    props = torch.cuda.get_device_properties(dev) if cuda else None
    outcomes = [r["outcome"] for r in gathered]
    bad = next((r for r in gathered if r["outcome"] != "ok"), None)
    row: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "model": spec.id, **opts.model_dump(mode="json"),
        "num_gpus": world, "distribution": strategy, "reshard_after_forward": reshard if strategy == "fsdp" else None,
        "offload_params": offload if strategy == "fsdp" else None,
        "gradient_checkpointing": opts.checkpointing, "steps": steps, "warmup_steps": warm,
        "outcome": "oom" if "oom" in outcomes else (bad["outcome"] if bad else "ok"),
        "error": bad["error"] if bad else None,
        "gpu_name": props.name if props else "cpu", "gpu_total_bytes": total,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "driver": driver_version() if cuda else None, "cuda": torch.version.cuda, "versions": versions(),
        "python": platform.python_version(), **host_info(), "host_launch_us": gathered[0]["host_launch_us"],
        "git_commit": git_commit(),
        "source": "ftcalc profile (torchrun, one process per GPU)",
        "per_rank": gathered,
    }
    if bad and bad.get("traceback"):
        row["traceback"] = bad["traceback"]
    for key in ("peak_allocated_bytes", "peak_reserved_bytes", "device_used_bytes", "non_allocator_bytes",
                "device_used_before_model_bytes", "allocated_after_load_bytes", "load_peak_allocated_bytes",
                "num_alloc_retries"):
        vals = [r[key] for r in gathered if r.get(key) is not None]
        if vals:
            row[key] = max(vals)  # per GPU: the fullest rank
    row["load_seconds"] = max(r.get("load_seconds", 0.0) for r in gathered)
    # a step ends when the slowest rank ends (they synchronize in every collective)
    per_step = [max(ts) for ts in zip(*[r["step_seconds"] for r in gathered], strict=False)] if all(
        r["step_seconds"] for r in gathered) else []
    row["step_seconds"] = per_step
    row["losses"] = gathered[0]["losses"]
    timed = per_step[warm:]
    if timed and row["outcome"] == "ok":
        med = statistics.median(timed)
        per_gpu_tokens = opts.tokens_per_step * opts.gradient_accumulation_steps
        row["step_seconds_median"] = round(med, 5)
        row["tokens_per_second"] = round(world * per_gpu_tokens / med, 1)
        row["tokens_per_second_per_gpu"] = round(per_gpu_tokens / med, 1)
    return row


def _main(argv: list[str] | None = None) -> int:
    import argparse

    import torch
    import torch.distributed as dist

    from ftcalc.measure.profile import record_rows

    ap = argparse.ArgumentParser(description="one configuration across the GPUs of a torchrun launch")
    ap.add_argument("--config", required=True, help="one plan line (JSON)")
    ap.add_argument("--out", required=True, help="JSONL file rank 0 appends the row to")
    a = ap.parse_args(argv)
    cfg = json.loads(a.config)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    try:
        row = profile_distributed(cfg)
        if row is not None:
            record_rows([row], a.out)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(_main())
