"""Refit the time coefficients the adapter path's byte count moves, every other one held.

    python lab/benchmarks/refit_adapter_rates.py [--write]

ftcalc/model/throughput.py counts each adapted Linear's adapter path in bytes (adapter_path_bytes: its input and output
elements, by dtype; docs/notes/time-model.md). Before that count the fitted matmul rates held that cost. This refits
efficiency_lora, efficiency_qlora, efficiency_half_hidden and fp32_rate_ratio (whose one fit row, c-006, is fp32
LoRA) with ftcalc calibrate's own loss on its own fit rows (calibrate._tp_loss over calibrate._time_fit_rows:
validation rows are never fitted) from the shipped values, and with --write stores them in data/coefficients.json.
A full `ftcalc calibrate` would refit every coefficient; this keeps the rest as shipped so that only what the count
touches moves. Sixth session: the input side only (three coefficients, 97 rows); eighth: both sides (104 rows).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace

from ftcalc._paths import data_dir
from ftcalc.measure.calibrate import _TP_BOUNDS, _coordinate_descent, _time_fit_rows, _tp_loss, load_measurements
from ftcalc.model.throughput import load_throughput

NAMES = ("efficiency_lora", "efficiency_qlora", "efficiency_half_hidden", "fp32_rate_ratio")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    tc0 = load_throughput()
    rows = _time_fit_rows(load_measurements())
    best = _coordinate_descent(tc0, {k: _TP_BOUNDS[k] for k in NAMES}, lambda t: _tp_loss(rows, t),
                               (0.2, 0.05, 0.01), rounds=8)
    print(f"{len(rows)} fit rows; loss {_tp_loss(rows, tc0):.4f} -> {_tp_loss(rows, best):.4f}")
    for k in NAMES:
        print(f"  {k}: {getattr(tc0, k):.4g} -> {getattr(best, k):.4g}")
    if a.write:
        path = data_dir() / "coefficients.json"
        d = json.loads(path.read_text())
        src = d["throughput"]["source"].split("; ")[0]
        d["throughput"] = asdict(replace(best, source=f"{src}; {', '.join(NAMES)} refitted alone on {len(rows)} runs "
                                                      "with the adapter path counted in bytes (lab/benchmarks/refit_adapter_rates.py)"))
        path.write_text(json.dumps(d, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
