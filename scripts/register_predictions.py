"""Register ftcalc's predictions for a profiling plan before it runs (a blind check needs them written first).

    python scripts/register_predictions.py g --gpu "NVIDIA H200" [--gpu-total-bytes 150109880320]

Writes data/predictions/<plan>.json: for every plan line, in order (run ids are assigned in that order by
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def predict(line: dict, gpu_name: str, gpu_total: int) -> dict:
    from ftcalc.calibrate import predict_row, row_options
    from ftcalc.hardware import get_gpu
    from ftcalc.parallel import estimate_parallel, strategy_of

    row = dict(line, gpu_name=gpu_name, gpu_total_bytes=gpu_total)
    row.setdefault("num_gpus", 1)
    n = int(row["num_gpus"])
    gpu = get_gpu(gpu_name)
    if n > 1:
        strategy = strategy_of(row.get("distribution") or "ddp",
                               reshard_after_forward=row.get("reshard_after_forward") is not False)
        e = estimate_parallel(row["model"], row_options(row), gpu.gpu, strategy, n)
        out = {"strategy": strategy, "peak_allocated_bytes": e.peak_allocated_bytes,
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
    args = ap.parse_args()
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
    out = ROOT / "data" / "predictions" / f"{args.plan}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"plan": args.plan, "gpu": args.gpu, "gpu_total_bytes": args.gpu_total_bytes,
                               "predicted_at_commit": commit,
                               "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                               "predictions": preds}, indent=1) + "\n")
    print("wrote", out.relative_to(ROOT))


if __name__ == "__main__":
    main()
