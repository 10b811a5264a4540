"""The measurement database, the fixed fit/validation split, and fitting that never sees validation rows."""

from __future__ import annotations

import copy
import json

from ftcalc.measure.calibrate import (
    fit_memory,
    is_validation,
    load_measurements,
    predict_row,
    usable,
    validate_rows,
)

ROWS = load_measurements()


def test_database_has_provenance_for_every_row():
    assert len(ROWS) >= 60
    for r in ROWS:
        for key in ("run_id", "model", "method", "seq_len", "batch_size", "outcome", "gpu_name", "gpu_total_bytes",
                    "driver", "cuda", "versions", "date", "git_commit"):
            assert r.get(key) is not None, (r.get("run_id"), key)
    gpus = {r["gpu_name"] for r in ROWS}
    assert any("H100" in g for g in gpus) and any("H200" in g for g in gpus)
    assert any(r["outcome"] == "oom" for r in ROWS)


def test_split_is_fixed_by_run_id():
    assert is_validation({"run_id": "a-003"}) and is_validation({"run_id": "c-023"})
    assert not is_validation({"run_id": "a-004"}) and not is_validation({"run_id": "b-000"})
    val = [r for r in ROWS if is_validation(r)]
    assert 0.2 < len(val) / len(ROWS) < 0.3


def test_fit_never_reads_validation_rows():
    fit_rows = [r for r in ROWS if not is_validation(r) and usable(r)][:8]
    val_rows = [r for r in ROWS if is_validation(r) and usable(r)][:4]
    a = fit_memory(fit_rows)
    poisoned = copy.deepcopy(val_rows)
    for r in poisoned:
        r["peak_reserved_bytes"] *= 3
        r["peak_allocated_bytes"] *= 3
    b = fit_memory(fit_rows + poisoned)  # validation rows passed in on purpose: they must be ignored
    assert a == b
    assert all(is_validation(r) for r in poisoned)


def test_prediction_of_a_measured_run_is_close():
    row = next(r for r in ROWS if r["run_id"] == "a-000")  # Llama-3-8B LoRA 2048x1 on an H100
    p = predict_row(row)
    assert abs(p["peak_allocated_bytes"] / row["peak_allocated_bytes"] - 1) < 0.02
    recs = validate_rows([row])
    assert recs[0]["run_id"] == "a-000" and abs(recs[0]["err_device_used"]) < 0.05


def test_shipped_coefficients_were_fitted_on_fit_rows_only():
    from ftcalc._paths import data_dir

    coeffs = json.loads((data_dir() / "coefficients.json").read_text())
    fitted = set(coeffs["fit_runs"])
    assert fitted and not any(is_validation({"run_id": rid}) for rid in fitted)


def test_gpu_speed_fit_moves_only_the_h200_factor_and_ignores_validation_rows():
    from dataclasses import asdict

    from ftcalc.measure.calibrate import fit_gpu_speed
    from ftcalc.model.throughput import ThroughputCoefficients, load_throughput

    start = load_throughput()
    rows = [r for r in ROWS if usable(r) and r.get("gpu_name") and not is_validation(r)][:12]
    rows += [r for r in ROWS if usable(r) and "H200" in str(r.get("gpu_name")) and not is_validation(r)][:4]
    a = fit_gpu_speed(rows, start)
    changed = {k for k, v in asdict(a).items() if v != asdict(start)[k]} - {"source"}
    assert changed <= {"speed_h200"}
    poisoned = copy.deepcopy([r for r in ROWS if is_validation(r) and usable(r) and "H200" in str(r.get("gpu_name"))])
    for r in poisoned:
        r["tokens_per_second"] *= 3
    assert fit_gpu_speed(rows + poisoned, start) == a
    assert ThroughputCoefficients().speed_h200 == 1.0  # unmeasured default: no change


def test_rows_with_an_exclusion_reason_are_kept_but_not_used():
    row = {"outcome": "ok", "peak_allocated_bytes": 1}
    assert usable(row)
    assert not usable({**row, "excluded": "ran beside another run on the same GPUs"})
    multi = load_measurements(multi_gpu=True)
    disturbed = [r for r in multi if r["run_id"] == "n-000" and r.get("outcome") == "ok"]
    assert disturbed and disturbed[0]["excluded"] and not usable(disturbed[0])
