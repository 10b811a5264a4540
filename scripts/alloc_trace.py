"""Record the caching allocator's event trace of a few training steps of the shared recipe (the
fragmentation question), one configuration per process, compact JSON (gzip) per configuration.

    python scripts/alloc_trace.py --batch lab/plans/trace.jsonl --out DIR

For each configuration: the model is built as ``ftcalc profile`` builds it, then torch's memory history
is recorded (``torch.cuda.memory._record_memory_history``, no stacks) through ``steps`` training steps.
Written: ``<run_id>.json.gz`` with the configuration, the CUDA peaks (max allocated / reserved, as
``ftcalc profile`` measures them), the allocator's settings, the segments at the end
(``torch.cuda.memory._snapshot()['segments']``: address, total size, stream, blocks with size and state)
and the device trace: every event (action: alloc, free_requested, free_completed, segment_alloc,
segment_free, ...; addr; size; stream) in order, with a marker event per phase (build done, step k start).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
from pathlib import Path


def _one(cfg: dict, out_dir: str, frames_min_bytes: int | None = None) -> None:
    import torch

    from ftcalc.train import recipe
    from ftcalc.tables.catalog import resolve_model
    from ftcalc.model.options import make_options
    from ftcalc.measure.profile import write_allocator_trace

    cfg = dict(cfg)
    run_id = cfg.pop("run_id")
    steps = int(cfg.pop("steps", 3))
    spec = resolve_model(cfg.pop("model"))
    opts = make_options(**cfg)
    dev = torch.device("cuda", 0)
    torch.cuda.set_device(dev)
    torch.empty(1, device=dev)
    torch.cuda.memory._record_memory_history(enabled="all", context=None, stacks="python", max_entries=2_000_000)
    marks = []

    def mark(name: str) -> None:
        torch.cuda.synchronize(dev)
        n = sum(len(t) for t in torch.cuda.memory._snapshot()["device_traces"])
        marks.append({"name": name, "event_index": n, "allocated": torch.cuda.memory_allocated(dev),
                      "reserved": torch.cuda.memory_reserved(dev)})

    model = recipe.build_model(spec, opts, device="cuda:0", init="random")
    opt = recipe.build_optimizer(model, opts)
    mark("built")
    torch.cuda.reset_peak_memory_stats(dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    outcome = "ok"
    try:
        for k in range(steps):
            ids = recipe.random_batch(spec.arch.vocab_size, opts, "cuda:0", generator=gen)
            mark(f"step {k} start")
            recipe.train_step(model, opt, ids, opts, "cuda:0")
        mark("end")
    except torch.OutOfMemoryError:
        outcome = "oom"
    row = write_allocator_trace(dev, Path(out_dir) / f"{run_id}.json.gz", {
        "run_id": run_id, "model": spec.id, **opts.model_dump(mode="json"), "steps": steps, "outcome": outcome,
        "allocator_settings": torch._C._accelerator_getAllocatorSettings()
        if hasattr(torch._C, "_accelerator_getAllocatorSettings") else None, "marks": marks},
        frames_min_bytes=frames_min_bytes)
    print(f"{run_id}: {outcome} alloc {row['peak_allocated_bytes'] / 2**30:.2f} GiB reserved "
          f"{row['peak_reserved_bytes'] / 2**30:.2f} GiB, {len(row['trace'])} events", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--frames-min-mib", type=float, help="keep the Python frames of allocations of at least this size")
    a = ap.parse_args()
    frames = int(a.frames_min_mib * 2**20) if a.frames_min_mib is not None else None
    Path(a.out).mkdir(parents=True, exist_ok=True)
    import torch  # noqa: F401 - imported once before the forks, CUDA untouched
    ctx = mp.get_context("fork")
    for line in Path(a.batch).read_text().splitlines():
        if not line.strip():
            continue
        p = ctx.Process(target=_one, args=(json.loads(line), a.out, frames))
        p.start()
        p.join(240)
        if p.is_alive():
            p.kill()
            print("timeout", line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
