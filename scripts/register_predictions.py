"""Register ftcalc's predictions for a profiling plan before it runs (a blind check needs them written first).

    python scripts/register_predictions.py g --gpu "NVIDIA H200" [--gpu-total-bytes 150109880320]

Writes lab/predictions/<plan>.json: for every plan line, in order (run ids are assigned in that order by
``ftcalc profile --batch``), the predicted peak allocated, device used (per GPU for several GPUs) and tokens/s,
with the git commit and date the predictions were made at. scripts/compare_predictions.py compares them
with the measured rows later.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def predict(line: dict, gpu_name: str, gpu_total: int) -> dict:
    from ftcalc.measure.calibrate import predict_multi_gpu_row, predict_row, row_options
    from ftcalc.tables.catalog import resolve_model
    from ftcalc.model.estimator import check_options

    row = dict(line, gpu_name=gpu_name, gpu_total_bytes=gpu_total)
    row.setdefault("num_gpus", 1)
    # refuse before any GPU time what `ftcalc estimate` refuses (plan z's Mixtral line asked for dropout on the
    # fused experts, which peft refuses at run time)
    check_options(resolve_model(row["model"]), row_options(row))
    if int(row["num_gpus"]) > 1:
        e = predict_multi_gpu_row(row)
        out = {"strategy": e.strategy, "peak_allocated_bytes": e.peak_allocated_bytes,
               "device_used_bytes": e.device_used_bytes, "tokens_per_second": e.tokens_per_second}
    else:
        p = predict_row(row)
        out = {"strategy": "single", "peak_allocated_bytes": p["peak_allocated_bytes"],
               "peak_reserved_bytes": p["peak_reserved_bytes"], "device_used_bytes": p["device_used_bytes"],
               "tokens_per_second": p["tokens_per_second"], "fragmentation_model": p["fragmentation_model"]}
    out["fits"] = bool(out["device_used_bytes"] <= gpu_total)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("plan")
    ap.add_argument("--gpu", default="NVIDIA H200")
    ap.add_argument("--gpu-total-bytes", type=int, default=150109880320)
    ap.add_argument("--force", action="store_true", help="replace predictions already registered for this plan")
    args = ap.parse_args()
    out = ROOT / "data" / "predictions" / f"{args.plan}.json"
    if out.exists() and not args.force:
        print(f"register_predictions: {out.relative_to(ROOT)} already holds the predictions registered for plan "
              f"{args.plan}; they are the blind record, so they are kept (--force replaces them)", file=sys.stderr)
        sys.exit(2)
    lines = [json.loads(x) for x in (ROOT / "scripts" / "plans" / f"{args.plan}.jsonl").read_text().splitlines() if x]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    preds = []
    for i, line in enumerate(lines):
        p = predict(line, args.gpu, args.gpu_total_bytes)
        preds.append({"run_id": f"{args.plan}-{i:03d}", "config": line, **p})
        gib = 2.0 ** 30
        tps = p["tokens_per_second"]
        print(f"{args.plan}-{i:03d} {line['model'].split('/')[-1]:<22} {line['method']:<5} "
              f"{line.get('num_gpus', 1)}x{line.get('distribution') or 'single':<6} {line['seq_len']}x{line['batch_size']} "
              f"alloc {p['peak_allocated_bytes'] / gib:7.2f} used {p['device_used_bytes'] / gib:7.2f} GiB "
              f"tok/s {tps if tps is None or math.isnan(tps) else round(tps):>7} fits {p['fits']}")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"plan": args.plan, "gpu": args.gpu, "gpu_total_bytes": args.gpu_total_bytes,
                               "predicted_at_commit": commit,
                               "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                               "predictions": preds}, indent=1) + "\n")
    print("wrote", out.relative_to(ROOT))


if __name__ == "__main__":
    main()
