"""Check the caching-allocator model: replay of the recorded traces, and the fragmentation gap it predicts.

    PYTHONPATH=. python lab/benchmarks/allocator_check.py [--no-replay]

1. Replays every ``data/traces/t-*.json.gz`` through ``ftcalc.model.allocsim.allocator.replay_trace`` (simulated vs
   recorded peak reserved / allocated, segment_alloc count and sizes, block addresses).
2. For the same traces, the gap (peak reserved - peak allocated) of the sequence generated from the model
   config (``ftcalc.model.allocsim.sequence.simulate_training``) against the measured one.
3. For every full fine-tuning row of the measurement database (outcome ok): measured gap, the current
   fitted model's gap (``ftcalc.measure.calibrate.predict_row``) and the simulated gap; validation rows marked.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import json
import sys

from ftcalc.model.allocsim.sequence import simulate_training
from ftcalc.model.allocsim.allocator import replay_trace
from ftcalc.measure.calibrate import is_validation, load_measurements, predict_row, row_options
from ftcalc.tables.catalog import resolve_model
from ftcalc.model.options import make_options

G = 2**30
KEYS = ("method", "seq_len", "batch_size", "gradient_checkpointing", "optimizer", "precision")


def replay_table() -> None:
    print("## Replay of the recorded traces (simulated vs recorded)")
    print(f"{'run':8} {'reserved sim':>12} {'recorded':>10} {'err':>8} {'alloc sim':>10} {'recorded':>10} "
          f"{'segments':>9} {'size mism':>9} {'addr mism':>9}")
    for path in sorted(glob.glob("data/traces/t-*.json.gz")):
        with gzip.open(path, "rt") as f:
            tr = json.load(f)
        r = replay_trace(tr, use_recorded_addresses=True)
        print(f"{r.run_id:8} {r.peak_reserved / G:12.3f} {r.recorded_peak_reserved / G:10.3f} "
              f"{r.reserved_error * 100:+7.3f}% {r.peak_allocated / G:10.3f} {r.recorded_peak_allocated / G:10.3f} "
              f"{r.segment_allocs:>4}/{r.recorded_segment_allocs:<4} {r.segment_size_mismatches:9d} "
              f"{r.address_mismatches:9d}")
    print()
    print("## Generated sequence vs the traces' measured gap (GiB)")
    print(f"{'run':8} {'alloc sim':>9} {'measured':>9} {'gap sim':>8} {'measured':>9}")
    for path in sorted(glob.glob("data/traces/t-*.json.gz")):
        with gzip.open(path, "rt") as f:
            tr = json.load(f)
        sim = simulate_training(resolve_model(tr["model"]), make_options(**{k: tr[k] for k in KEYS}))
        print(f"{tr['run_id']:8} {sim.peak_allocated / G:9.2f} {tr['peak_allocated_bytes'] / G:9.2f} "
              f"{sim.gap / G:8.2f} {(tr['peak_reserved_bytes'] - tr['peak_allocated_bytes']) / G:9.2f}")
    print()


def database_table() -> None:
    rows = [r for r in load_measurements() if r.get("method") == "full" and r.get("outcome") == "ok"]
    print("## Full fine-tuning rows of the measurement database: fragmentation gap (GiB)")
    print(f"{'run_id':8} {'split':5} {'optimizer':17} {'measured':>8} {'current':>8} {'simulated':>9} "
          f"{'cur err':>8} {'sim err':>8}")
    errs = {"fit": ([], []), "val": ([], [])}
    for r in rows:
        meas = (r["peak_reserved_bytes"] - r["peak_allocated_bytes"]) / G
        p = predict_row(r, fragmentation="fitted")
        cur = (p["peak_reserved_bytes"] - p["peak_allocated_bytes"]) / G
        sim = simulate_training(resolve_model(r["model"]), row_options(r)).gap / G
        split = "val" if is_validation(r) else "fit"
        errs[split][0].append(abs(cur - meas))
        errs[split][1].append(abs(sim - meas))
        print(f"{r['run_id']:8} {split:5} {r['optimizer']:17} {meas:8.2f} {cur:8.2f} {sim:9.2f} "
              f"{cur - meas:+8.2f} {sim - meas:+8.2f}")
    for split, (c, s) in errs.items():
        if c:
            print(f"mean |error| {split}: current {sum(c) / len(c):.2f} GiB, simulated {sum(s) / len(s):.2f} GiB"
                  f" (max {max(c):.2f} / {max(s):.2f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-replay", action="store_true", help="only the database table")
    a = ap.parse_args()
    if not a.no_replay:
        replay_table()
    database_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
