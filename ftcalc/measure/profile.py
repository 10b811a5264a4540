"""Measure a real training run's memory and speed on a CUDA GPU: ``ftcalc profile``.

    ftcalc profile --model llama-3-8b --method lora --seq-len 2048 --batch-size 4 --steps 6 --record
    python -m ftcalc.measure.profile --batch plans/h100.jsonl --out measurements.jsonl   # many configs, one process each

The run builds the model from its config with random weights on the GPU (nothing downloaded), then
runs ``steps`` real training steps of the shared recipe (ftcalc/train/recipe.py) on random token ids, and
records one row of the measurement schema (docs/measurements.md): CUDA memory statistics, device
memory in use (with the CUDA context), allocator retries, per-step times, tokens/s, the outcome
(``ok`` or ``oom``) and provenance (GPU, driver, CUDA, library versions, date, git commit).

One configuration per process: CUDA memory statistics, the caching allocator's pool and the CUDA
context are per process (PyTorch's CUDA semantics notes, "Memory management"; ``torch.cuda.memory_stats``).
``--batch`` forks a fresh child per
configuration from a parent that has imported the heavy libraries but never touched CUDA.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ftcalc.model.options import TrainingOptions, make_options
from ftcalc.sizes import GIB
from ftcalc.tables.catalog import resolve_model
from ftcalc.train.records import (  # noqa: F401  # noqa: F401
    SCHEMA_VERSION,
    check_record_file,
    driver_version,
    git_commit,
    record_file,
    record_rows,
    versions,
)

__all__ = ["profile", "profile_multi_gpu", "SCHEMA_VERSION"]



def host_info() -> dict[str, Any]:
    """The host CPU that launches the kernels (provenance: small steps are bound by its speed)."""
    name = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host_cpu": name, "host_cpus": os.cpu_count()}


def launch_microseconds(dev: Any, ops: int = 1000, rounds: int = 5) -> float:
    """Host time to launch one small eager CUDA op (median over ``rounds`` of ``ops`` out-of-place adds on a
    one-element tensor, the GPU idle): the host's kernel-launch speed, provenance for the launch-bound regime
    of small steps (the machines differ in CPU)."""
    import torch

    x = torch.zeros(1, device=dev)
    for _ in range(200):
        x = x + 1
    torch.cuda.synchronize(dev)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(ops):
            x = x + 1
        times.append(time.perf_counter() - t0)
        torch.cuda.synchronize(dev)
    del x
    torch.cuda.empty_cache()  # leave the caching allocator as it was (the run's reserved memory is measured)
    return round(statistics.median(times) / ops * 1e6, 3)


def step_phases(starts: list[float], marks: list[float], ends: list[float]) -> list[list[float]]:
    """Per step: [forward + backward to the loss read, optimizer update], seconds (the last mark of a step
    is its last micro-batch's loss read)."""
    return [[round(m - s, 5), round(e - m, 5)] for s, m, e in zip(starts, marks, ends, strict=True)]


def profile(model: str, opts: TrainingOptions, steps: int = 6, warmup_steps: int = 2, device: str = "cuda",
            run_id: str | None = None) -> dict[str, Any]:
    """Run ``steps`` training steps and return one measurement row (a dict of the schema).

    An out-of-memory error is an outcome (``outcome="oom"``, with the peaks reached before it), not a
    crash. Call once per process.
    """
    import torch

    from ftcalc.train import recipe

    if not torch.cuda.is_available():
        from ftcalc.errors import MissingDependencyError

        raise MissingDependencyError("ftcalc profile needs a CUDA GPU (torch.cuda.is_available() is False)")
    spec = resolve_model(model)
    dev = torch.device(device)
    if dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.set_device(dev)
    torch.cuda.init()
    torch.empty(1, device=dev)  # create the context
    launch_us = launch_microseconds(dev)
    free0, total = torch.cuda.mem_get_info(dev)
    props = torch.cuda.get_device_properties(dev)
    row: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "model": spec.id,
        **opts.model_dump(mode="json"),
        "gradient_checkpointing": opts.checkpointing,
        "steps": steps,
        "warmup_steps": warmup_steps,
        "outcome": None,
        "error": None,
        "gpu_name": props.name,
        "gpu_total_bytes": total,
        "device_used_before_model_bytes": total - free0,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "driver": driver_version(),
        "cuda": torch.version.cuda,
        "versions": versions(),
        "python": platform.python_version(),
        **host_info(),
        "host_launch_us": launch_us,
        "git_commit": git_commit(),
        "source": "ftcalc profile",
    }
    step_times: list[float] = []
    starts: list[float] = []
    ends: list[float] = []
    loss_reads: list[float] = []
    losses: list[float] = []
    t_load = time.perf_counter()
    model_obj = optimizer = None
    try:
        model_obj = recipe.build_model(spec, opts, device=device, init="random")
        optimizer = recipe.build_optimizer(model_obj, opts)
        torch.cuda.synchronize(dev)
        row["load_seconds"] = round(time.perf_counter() - t_load, 3)
        row["allocated_after_load_bytes"] = torch.cuda.memory_allocated(dev)
        row["reserved_after_load_bytes"] = torch.cuda.memory_reserved(dev)
        row["load_peak_allocated_bytes"] = torch.cuda.max_memory_allocated(dev)
        base = model_obj.get_base_model() if hasattr(model_obj, "get_base_model") else model_obj
        row["attn_implementation"] = getattr(base.config, "_attn_implementation", None)
        row["trainable_params"] = sum(p.numel() for p in model_obj.parameters() if p.requires_grad)
        torch.cuda.reset_peak_memory_stats(dev)
        gen = torch.Generator(device=dev).manual_seed(0)
        for _ in range(steps):
            ids = recipe.random_batch(spec.arch.vocab_size, opts, device, generator=gen)
            torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            # one optimizer step per gradient_accumulation_steps micro-batches, as the executor does
            marks: list[float] = []
            losses.append(recipe.accumulated_step(model_obj, optimizer, ids, opts, device, marks=marks))
            torch.cuda.synchronize(dev)
            t1 = time.perf_counter()
            step_times.append(t1 - t0)
            starts.append(t0)
            loss_reads.append(marks[-1])
            ends.append(t1)
        row["outcome"] = "ok"
    except torch.OutOfMemoryError as e:
        row["outcome"] = "oom"
        row["error"] = str(e).splitlines()[0][:300]
    except Exception as e:  # noqa: BLE001 - recorded, the batch goes on
        row["outcome"] = "error"
        row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        row["traceback"] = traceback.format_exc()[-2000:]
    row.update(cuda_memory_readings(dev, total), step_seconds=[round(s, 5) for s in step_times],
               step_phase_seconds=step_phases(starts, loss_reads, ends), losses=[round(v, 4) for v in losses])
    timed = step_times[warmup_steps:]
    if timed:
        med = statistics.median(timed)
        row["step_seconds_median"] = round(med, 5)
        row["tokens_per_second"] = round(opts.tokens_per_step * opts.gradient_accumulation_steps / med, 1)
    return row


def cuda_memory_readings(dev: Any, total: int) -> dict[str, Any]:
    """A measurement row's CUDA memory fields, read at the end of the run on ``dev`` (``total`` bytes)."""
    import torch

    free1, _ = torch.cuda.mem_get_info(dev)
    stats = torch.cuda.memory_stats(dev)
    reserved_now = torch.cuda.memory_reserved(dev)
    out = {
        "peak_allocated_bytes": torch.cuda.max_memory_allocated(dev),
        "peak_reserved_bytes": torch.cuda.max_memory_reserved(dev),
        "reserved_end_bytes": reserved_now,
        "device_used_end_bytes": total - free1,
        # what the process holds outside the caching allocator (CUDA context, library workspaces, NCCL
        # buffers, bitsandbytes paged memory): used minus reserved, read at the end of the run
        "non_allocator_bytes": (total - free1) - reserved_now,
        "num_alloc_retries": int(stats.get("num_alloc_retries", 0)),
        "num_ooms": int(stats.get("num_ooms", 0)),
    }
    # nvidia-smi's view at the peak: the reserved pool at its peak plus what lives outside it
    out["device_used_bytes"] = out["peak_reserved_bytes"] + out["non_allocator_bytes"]
    return out


def write_allocator_trace(dev: Any, path: Path, row: dict[str, Any], frames_min_bytes: int | None = None) -> dict[str, Any]:
    """Stop recording the caching allocator's history on ``dev`` and write ``row`` plus the CUDA peaks, the
    event trace (action, addr, size, stream per event) and the segments at the end as gzip JSON at ``path``
    (the format ftcalc.model.allocsim.allocator.replay_trace reads; scripts/alloc_trace.py, profile_dist's ``trace_dir``).
    With ``frames_min_bytes``, allocations of at least that size keep the innermost Python frames that made
    them ("file:line function", when recorded with python stacks): who allocated what. Returns the written row."""
    import gzip

    import torch

    snap = torch.cuda.memory._snapshot()
    torch.cuda.memory._record_memory_history(enabled=None)
    trace = [{"action": e["action"], "addr": e["addr"], "size": e["size"], "stream": e["stream"]}
             for e in snap["device_traces"][dev.index or 0]]
    if frames_min_bytes is not None:
        for t, e in zip(trace, snap["device_traces"][dev.index or 0], strict=True):
            if e["action"] == "alloc" and e["size"] >= frames_min_bytes and e.get("frames"):
                t["frames"] = [f"{f['filename'].rsplit('/', 2)[-1]}:{f['line']} {f['name']}" for f in e["frames"][:8]]
    segs = [{"address": s["address"], "total_size": s["total_size"], "stream": s["stream"],
             "segment_type": s.get("segment_type"),
             "blocks": [{"size": b["size"], "state": b["state"]} for b in s["blocks"]]} for s in snap["segments"]]
    out = {**row, "gpu_name": torch.cuda.get_device_name(dev),
           "peak_allocated_bytes": torch.cuda.max_memory_allocated(dev),
           "peak_reserved_bytes": torch.cuda.max_memory_reserved(dev), "torch": torch.__version__,
           "segments_end": segs, "trace": trace}
    from ftcalc.safe_write import atomic_output

    with atomic_output(path, marker=(b"\x1f\x8b",), what="allocator trace") as tmp, gzip.open(tmp, "wt") as f:
        json.dump(out, f)
    return out


def _child(cfg: dict[str, Any], out_path: str) -> None:
    try:
        opts_kw = dict(cfg)
        model = opts_kw.pop("model")
        steps = int(opts_kw.pop("steps", 6))
        warm = int(opts_kw.pop("warmup_steps", 2))
        run_id = opts_kw.pop("run_id", None)
        row = profile(model, make_options(**opts_kw), steps=steps, warmup_steps=warm, run_id=run_id)
    except BaseException as e:  # noqa: BLE001
        row = {**cfg, "outcome": "error",
               "error": f"{type(e).__name__}: {e}"[:500], "traceback": traceback.format_exc()[-2000:]}
    record_rows([row], out_path)


def run_batch(plan_path: str, out_path: str, timeout_s: float = 300, only: str | None = None) -> None:
    """Run every configuration of a JSONL plan, each in a fresh child process, appending rows to ``out_path``.

    ``only`` (``multi`` or ``single``) runs the lines on several GPUs or the one-GPU lines alone, with the run
    ids of the whole plan (``<plan>-<index>``): a machine can run a plan's one-GPU lines after its multi-GPU
    ones, the other GPUs idle (lab/gpu-calls/gpu_call_m.sh)."""
    import multiprocessing as mp

    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    # import the heavy libraries once, without touching CUDA, so that each fork starts fast
    import peft  # noqa: F401
    import torch
    import transformers  # noqa: F401

    plans = [json.loads(line) for line in Path(plan_path).read_text().splitlines() if line.strip()]
    use_fork = not torch.cuda.is_initialized()
    ctx = mp.get_context("fork" if use_fork else "spawn")
    for i, cfg in enumerate(plans):
        cfg.setdefault("run_id", f"{Path(plan_path).stem}-{i:03d}")
        if only and (int(cfg.get("num_gpus", 1)) > 1) != (only == "multi"):
            continue
        t0 = time.time()
        if int(cfg.get("num_gpus", 1)) > 1:
            _run_distributed(cfg, out_path, timeout_s)
        else:
            p = ctx.Process(target=_child, args=(dict(cfg), out_path))
            p.start()
            p.join(timeout_s)
            if p.is_alive():
                p.kill()
                p.join()
                record_rows([{**cfg, "outcome": "timeout", "error": f"no result in {timeout_s}s"}], out_path)
        last = json.loads(Path(out_path).read_text().splitlines()[-1])
        print(f"[{i + 1}/{len(plans)}] {cfg['run_id']} {cfg.get('model')} {cfg.get('method')} "
              f"s={cfg.get('seq_len')} b={cfg.get('batch_size')} -> {last.get('outcome')} "
              f"alloc={last.get('peak_allocated_bytes', 0) / GIB:.2f} res={last.get('peak_reserved_bytes', 0) / GIB:.2f} "
              f"used={last.get('device_used_bytes', 0) / GIB:.2f} GiB tok/s={last.get('tokens_per_second')} "
              f"({time.time() - t0:.0f}s) {last.get('error') or ''}", flush=True)


def profile_multi_gpu(model: str, opts: TrainingOptions, distribution: str, steps: int = 6, warmup_steps: int = 2,
                      run_id: str | None = None, timeout_s: float = 600, offload_params: bool = False) -> dict[str, Any]:
    """``profile`` on ``opts.num_gpus`` GPUs of this machine with ``ddp`` or ``fsdp``: one torchrun process per
    GPU (ftcalc/measure/profile_dist.py); ``offload_params``: FSDP2 CPU offload. Returns the gathered row (per-GPU peaks of
    the fullest rank, ``per_rank``)."""
    import tempfile

    import torch

    from ftcalc.errors import InvalidArgumentError, MissingDependencyError

    if not torch.cuda.is_available():
        raise MissingDependencyError("ftcalc profile needs CUDA GPUs (torch.cuda.is_available() is False)")
    if torch.cuda.device_count() < opts.num_gpus:
        raise InvalidArgumentError(f"--num-gpus {opts.num_gpus}: this machine has {torch.cuda.device_count()} GPU(s)")
    cfg = {"model": model, **opts.model_dump(mode="json"), "distribution": distribution, "steps": steps,
           "warmup_steps": warmup_steps, "run_id": run_id, "offload_params": offload_params}
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "row.jsonl")
        _run_distributed(cfg, out, timeout_s)
        return json.loads(Path(out).read_text().splitlines()[-1])


def _run_distributed(cfg: dict[str, Any], out_path: str, timeout_s: float) -> None:
    """One multi-GPU configuration: torchrun, one process per GPU (ftcalc/measure/profile_dist.py)."""
    import signal

    n = int(cfg["num_gpus"])
    before = _count_lines(out_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
           "-m", "ftcalc.measure.profile_dist", "--config", json.dumps(cfg), "--out", out_path]
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        rc = proc.wait(timeout=timeout_s)
        error = None if _count_lines(out_path) > before else f"torchrun exited {rc} without a row"
        outcome = "error"
    except subprocess.TimeoutExpired:
        # SIGTERM first: torchrun stops its workers on it. Its workers run in sessions of their own, so a
        # SIGKILL of torchrun's process group alone left them running beside the next configuration (run
        # n-000): they are listed before anything is signalled and killed one by one if they outlive it
        workers = descendant_pids(proc.pid)
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        error, outcome = f"no result in {timeout_s}s", "timeout"
    if error:
        record_rows([{**cfg, "outcome": outcome, "error": error}], out_path)


def descendant_pids(pid: int) -> list[int]:
    """The processes below ``pid`` (children, grandchildren, ...), from /proc; empty where there is no /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _count_lines(path: str) -> int:
    try:
        return len(Path(path).read_text().splitlines())
    except OSError:
        return 0


if __name__ == "__main__":  # python -m ftcalc.measure.profile --batch plan.jsonl --out rows.jsonl
    import argparse

    ap = argparse.ArgumentParser(description="run a JSONL plan of profiling configurations, one process each")
    ap.add_argument("--batch", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--only", choices=["multi", "single"], help="only the lines on several GPUs, or on one")
    a = ap.parse_args()
    run_batch(a.batch, a.out, a.timeout, a.only)
    sys.exit(0)
