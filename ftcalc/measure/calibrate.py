"""Fit the memory model's free coefficients to real runs, and validate them on held-out runs.

    ftcalc calibrate [--out DIR] # fit on the fit rows, write DIR/coefficients.json + DIR/calibration_report.md
                                 # (DIR: --out, default $XDG_DATA_HOME/ftcalc; the shipped data/ only with --out data)
    ftcalc validate [--json]    # predicted vs measured on the validation rows, with summary statistics

The rows are the measurement database (data/measurements/*.jsonl, schema in docs/measurements.md).
They are split once, by the rule written in data/measurements/split.json: a run is a validation run
when the number at the end of its ``run_id`` is 3 modulo 4 (every fourth run of each plan). The fit
never sees validation rows.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ftcalc._paths import data_dir
from ftcalc.errors import DataFileError, FtcalcError
from ftcalc.model.memory import Coefficients, estimate_memory, load_coefficients
from ftcalc.model.options import TrainingOptions
from ftcalc.model.throughput import ThroughputCoefficients, step_parts, tokens_per_second
from ftcalc.tables.catalog import resolve_model
from ftcalc.tables.hardware import get_gpu
from ftcalc.tables.inventory import inventory

__all__ = ["load_measurements", "is_validation", "is_multi_gpu_validation", "predict_row", "predict_multi_gpu_row", "fit_memory",
           "fit_throughput", "fit_gpu_speed", "validate_rows", "validate_multi_gpu_rows", "summarize",
           "coefficients_to_json"]

_OPTION_FIELDS = set(TrainingOptions.model_fields)


def load_measurements(folder: str | Path | None = None, multi_gpu: bool = False) -> list[dict[str, Any]]:
    """The rows of every ``*.jsonl`` file in the measurement folder, with ``file`` and ``line`` added:
    one-GPU runs (what the memory and time models are fitted and validated on), or with ``multi_gpu``
    the runs on several GPUs (``num_gpus`` > 1: ftcalc.model.parallel, docs/multi-gpu.md)."""
    folder = Path(folder or data_dir() / "measurements")
    rows: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.jsonl")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFileError(f"{path}:{n}: not a JSON object ({e.msg})") from None
            row["file"], row["line"] = path.name, n
            if (int(row.get("num_gpus") or 1) > 1) == multi_gpu:
                rows.append(row)
    return rows


def _split_rule(folder: Path | None = None) -> dict[str, Any]:
    path = Path(folder or data_dir() / "measurements") / "split.json"
    if path.is_file():
        return json.loads(path.read_text())
    return {"modulus": 4, "validation_remainder": 3}


def is_validation(row: dict[str, Any], rule: dict[str, Any] | None = None) -> bool:
    """The fixed split: the trailing number of ``run_id`` modulo ``modulus`` equals ``validation_remainder``."""
    rule = rule or _split_rule()
    m = re.search(r"(\d+)$", str(row.get("run_id") or ""))
    return bool(m) and int(m.group(1)) % rule["modulus"] == rule["validation_remainder"]


def is_multi_gpu_validation(row: dict[str, Any], rule: dict[str, Any] | None = None) -> bool:
    """Multi-GPU runs: validation when the run's plan (run_id prefix) was measured after the multi-GPU model
    was frozen (split.json ``multi_gpu_validation_plans``)."""
    rule = rule or _split_rule()
    return str(row.get("run_id") or "").split("-")[0] in rule.get("multi_gpu_validation_plans", [])


def validate_multi_gpu_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Predicted (ftcalc.model.parallel.estimate_parallel, on the GPU the run used) vs measured per-GPU memory of
    the fullest rank and tokens/s of all GPUs, for each usable multi-GPU row; positive = over-estimate."""
    out = []
    for row in rows:
        if not usable(row) or int(row.get("num_gpus") or 1) < 2:
            continue
        e = predict_multi_gpu_row(row)
        rec = {"run_id": row["run_id"], "gpu": row.get("gpu_name"), "num_gpus": row["num_gpus"],
               "distribution": row.get("distribution"), "model": row["model"], "method": row["method"],
               "seq_len": row["seq_len"], "batch_size": row["batch_size"],
               "gradient_checkpointing": row["gradient_checkpointing"], "optimizer": row["optimizer"],
               "precision": row["precision"], "validation": is_multi_gpu_validation(row)}
        for key, pred in (("peak_allocated_bytes", e.peak_allocated_bytes), ("device_used_bytes", e.device_used_bytes),
                          ("tokens_per_second", e.tokens_per_second)):
            rec[f"pred_{key}"], rec[f"meas_{key}"] = pred, row.get(key)
            rec[f"err_{key.replace('_bytes', '')}"] = _rel(pred, row[key]) if row.get(key) else float("nan")
        rec["pred_scaling_efficiency"] = e.scaling_efficiency
        rec["host_bound"] = e.host_bound  # the forward + backward bound by the host's launches (HOST_BOUND_NOTE)
        out.append(rec)
    return out


def predict_multi_gpu_row(row: dict[str, Any]) -> Any:
    """ftcalc.model.parallel.estimate_parallel for a multi-GPU row (or plan line with ``gpu_name``): its model,
    options, GPU, GPU count and distribution (shard-grad-op when ``reshard_after_forward`` is False)."""
    from ftcalc.model.parallel import estimate_parallel, strategy_of
    from ftcalc.tables.hardware import get_gpu

    strategy = strategy_of(row.get("distribution") or "ddp", offload_params=row.get("offload_params") is True,
                           reshard_after_forward=row.get("reshard_after_forward") is not False)
    return estimate_parallel(row["model"], row_options(row), get_gpu(row["gpu_name"]).gpu, strategy,
                             int(row["num_gpus"]))


def row_options(row: dict[str, Any]) -> TrainingOptions:
    kw = {k: row[k] for k in _OPTION_FIELDS if k in row and row[k] is not None}
    if isinstance(kw.get("lora_targets"), list):
        kw["lora_targets"] = tuple(kw["lora_targets"])
    return TrainingOptions(**kw)


def predict_row(row: dict[str, Any], coeffs: Coefficients | None = None,
                tc: ThroughputCoefficients | None = None, fragmentation: str = "simulated") -> dict[str, Any]:
    """The estimator's prediction for a measured configuration, on the GPU it ran on (``fragmentation``:
    see ftcalc.model.memory.estimate_memory; the fit of the gap terms uses ``fitted``)."""
    spec = resolve_model(row["model"])
    opts = row_options(row)
    est = estimate_memory(spec.arch, inventory(spec.arch), opts, coeffs or load_coefficients(),
                          gpu_memory_bytes=row.get("gpu_total_bytes"),
                          transformers_version=(row.get("versions") or {}).get("transformers"),
                          fragmentation=fragmentation)
    tps = None
    if row.get("gpu_name"):
        try:
            tps = tokens_per_second(spec, opts, get_gpu(row["gpu_name"]), tc)
        except FtcalcError:
            tps = None
    return {"peak_allocated_bytes": est.peak_allocated_bytes, "peak_reserved_bytes": est.peak_reserved_bytes,
            "device_used_bytes": est.device_used_bytes, "peak_phase": est.peak_phase, "tokens_per_second": tps,
            "fragmentation_model": est.fragmentation_model}


def usable(row: dict[str, Any]) -> bool:
    """A row the fit and the validation read: it ran (outcome ok), and no ``excluded`` reason is recorded on it
    (a measurement known to be disturbed, kept in the database with the reason; docs/measurements.md)."""
    return row.get("outcome") == "ok" and bool(row.get("peak_allocated_bytes")) and not row.get("excluded")


def _rel(pred: float, meas: float) -> float:
    return (pred - meas) / meas


def validate_rows(rows: list[dict[str, Any]], coeffs: Coefficients | None = None,
                  tc: ThroughputCoefficients | None = None, fragmentation: str = "simulated") -> list[dict[str, Any]]:
    """Predicted vs measured for each usable row: bytes and relative errors (positive = over-estimate)."""
    out = []
    for row in rows:
        if not usable(row):
            continue
        p = predict_row(row, coeffs, tc, fragmentation)
        rec = {
            "run_id": row["run_id"], "gpu": row.get("gpu_name"), "model": row["model"], "method": row["method"],
            "seq_len": row["seq_len"], "batch_size": row["batch_size"],
            "gradient_checkpointing": row["gradient_checkpointing"], "optimizer": row["optimizer"],
            "precision": row["precision"], "lora_r": row.get("lora_r"), "phase": p["peak_phase"],
            "fragmentation_model": p["fragmentation_model"],
        }
        for key in ("peak_allocated_bytes", "peak_reserved_bytes", "device_used_bytes"):
            rec[f"pred_{key}"] = p[key]
            rec[f"meas_{key}"] = row[key]
            rec[f"err_{key.replace('_bytes', '')}"] = _rel(p[key], row[key])
        rec["pred_tokens_per_second"] = p["tokens_per_second"]
        rec["meas_tokens_per_second"] = row.get("tokens_per_second")
        rec["err_tokens_per_second"] = (_rel(p["tokens_per_second"], row["tokens_per_second"])
                                        if p["tokens_per_second"] and row.get("tokens_per_second") else float("nan"))
        out.append(rec)
    return out


def summarize(recs: list[dict[str, Any]], key: str = "err_device_used") -> dict[str, float]:
    """n, median/mean/max of |relative error|, worst under- and over-estimate of one error column."""
    errs = [r[key] for r in recs if r.get(key) is not None and not math.isnan(r[key])]
    if not errs:
        return {"n": 0}
    return {
        "n": len(errs),
        "median_abs": statistics.median(abs(e) for e in errs),
        "mean_abs": sum(abs(e) for e in errs) / len(errs),
        "max_abs": max(abs(e) for e in errs),
        "worst_under": min(errs),
        "worst_over": max(errs),
    }


# --------------------------------------------------------------------------- fitting

# coefficient -> (lower, upper) bounds: physically meaningful ranges
_BOUNDS = {
    "activation_scale": (0.8, 1.3),
    "fixed_allocated_bytes": (0.0, 2 * 2**30),
    "backward_transient_per_token_i": (0.0, 12.0),
    "backward_transient_per_token_h": (0.0, 16.0),
    "logits_buffers_fp32": (2.0, 4.0),
    "reserved_gap_fixed": (0.0, 3 * 2**30),
    "reserved_gap_per_logits_byte": (0.0, 2.0),
    "reserved_gap_per_layer_byte": (0.0, 4.0),
    "reserved_gap_fraction": (0.0, 0.1),
    "context_bytes": (0.3 * 2**30, 2 * 2**30),
    "reserved_gap_optimizer_logits": (0.0, 2.0),
    "reserved_gap_nockpt_grads": (0.0, 2.0),
    "reserved_gap_eager_scores": (0.0, 4.0),
    "reserved_gap_cached_step_tmp": (0.0, 2.0),
    "reserved_gap_tied_full_logits": (0.0, 5.0),
}
_ALLOC = ["activation_scale", "fixed_allocated_bytes", "backward_transient_per_token_i",
          "backward_transient_per_token_h", "logits_buffers_fp32"]
_RESERVED = ["reserved_gap_fixed", "reserved_gap_per_logits_byte", "reserved_gap_per_layer_byte",
             "reserved_gap_fraction", "reserved_gap_optimizer_logits", "reserved_gap_nockpt_grads",
             "reserved_gap_eager_scores", "reserved_gap_cached_step_tmp",
             "reserved_gap_tied_full_logits"]


def _loss(recs: list[dict[str, Any]], key: str) -> float:
    """Mean |error| with under-estimates weighted 3x (an under-estimate is a promised fit that OOMs)."""
    tot = 0.0
    for r in recs:
        e = r[key]
        tot += 3 * -e if e < 0 else e
    return tot / max(1, len(recs))


def _coordinate_descent(start: Any, bounds: dict[str, tuple[float, float]], loss_fn: Any,
                        steps: tuple[float, ...], rounds: int) -> Any:
    """Minimize ``loss_fn(coefficients)`` one coefficient at a time, within ``bounds``, by shrinking steps
    (a share of each coefficient's range); stops when a round improves nothing."""
    best, best_loss = start, loss_fn(start)
    for _ in range(rounds):
        improved = False
        for name, (lo, hi) in bounds.items():
            cur = getattr(best, name)
            for step in steps:
                for cand in (cur - step * (hi - lo), cur + step * (hi - lo)):
                    cand = min(hi, max(lo, cand))
                    trial = replace(best, **{name: cand})
                    loss = loss_fn(trial)
                    if loss < best_loss - 1e-9:
                        best, best_loss, cur, improved = trial, loss, cand, True
        if not improved:
            break
    return best


def _memory_descent(rows: list[dict[str, Any]], coeffs: Coefficients, names: list[str], key: str) -> Coefficients:
    return _coordinate_descent(coeffs, {n: _BOUNDS[n] for n in names},
                               lambda c: _loss(validate_rows(rows, c, fragmentation="fitted"), key),
                               (0.25, 0.1, 0.03, 0.01), rounds=6)


def fit_memory(rows: list[dict[str, Any]], start: Coefficients | None = None) -> Coefficients:
    """Fit the free coefficients on ``rows`` (the fit split): allocated first, then the reserved gap,
    then the context (median of the measured memory outside the allocator). Validation rows are dropped
    here, whatever the caller passes: the fit cannot see them."""
    fit_rows = [r for r in rows if usable(r) and not is_validation(r)]
    c = start or Coefficients()
    outside = [r["non_allocator_bytes"] for r in fit_rows
               if r.get("non_allocator_bytes") is not None and not str(r.get("optimizer", "")).startswith("paged")]
    if outside:
        c = replace(c, context_bytes=float(statistics.median(outside)))
    c = _memory_descent(fit_rows, c, _ALLOC, "err_peak_allocated")
    c = _memory_descent(fit_rows, c, _RESERVED, "err_peak_reserved")
    return replace(c, source="fitted by ftcalc calibrate", fitted_on=len(fit_rows))


_TP_BOUNDS = {
    "efficiency_full": (0.1, 0.9),
    "efficiency_lora": (0.1, 0.9),
    "efficiency_qlora": (0.1, 0.9),
    "dequant_bandwidth_share": (0.05, 1.0),
    "layer_overhead_s": (0.0, 0.02),
    "lora_module_overhead_s": (0.0, 0.003),
    "qlora_module_overhead_s": (0.0, 0.003),
    "eager_bytes_per_score": (2.0, 64.0),
    "opt_flops_8bit": (1e3, 1e5),
    "opt_bytes_paged": (4.0, 400.0),
    "opt_fixed_paged_s": (0.0, 0.3),
    "overlap_power": (1.0, 12.0),
    "fp32_rate_ratio": (0.03, 0.5),
    "opt_bytes_adafactor": (4.0, 200.0),
    "opt_bytes_adamw": (8.0, 80.0),
    "opt_bytes_adamw_fused": (4.0, 60.0),
    "opt_tensor_s": (0.0, 2e-4),
    "efficiency_half_hidden": (0.0, 8192.0),
    "norm_overhead_s": (0.0, 0.002),
    "speed_h200": (0.7, 1.5),
}


def measured_phases(row: dict[str, Any]) -> tuple[float, float] | None:
    """A one-GPU row's median (forward + backward of all micro-batches, optimizer update) seconds after the
    warm-up steps, when the row recorded them (``step_phase_seconds``, plan j on)."""
    phases = row.get("step_phase_seconds")
    if not phases or (row.get("num_gpus") or 1) > 1:
        return None
    timed = phases[int(row.get("warmup_steps") or 0):] or phases
    return statistics.median(p[0] for p in timed), statistics.median(p[1] for p in timed)


def _tp_loss(rows: list[dict[str, Any]], tc: ThroughputCoefficients) -> float:
    """Mean |log error| of tokens/s over the rows, plus, where a row recorded its two phases, of each phase
    (forward + backward, optimizer update): the mechanism's parts are fitted where they were measured."""
    errs = []
    for row in rows:
        spec = resolve_model(row["model"])
        opts = row_options(row)
        parts = step_parts(spec, opts, get_gpu(row["gpu_name"]), tc)
        pred = parts.tokens_per_second(opts)
        errs.append(abs(math.log(pred / row["tokens_per_second"])))
        phases = measured_phases(row)
        if phases:
            ga = opts.gradient_accumulation_steps
            errs.append(abs(math.log(ga * parts.micro_batch_s / phases[0])))
            errs.append(abs(math.log(parts.optimizer_s / phases[1])))
    return sum(errs) / max(1, len(errs))


def _time_fit_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fit rows with a measured speed on a known GPU (validation rows dropped, whatever is passed)."""
    return [r for r in rows if usable(r) and r.get("tokens_per_second") and r.get("gpu_name") and not is_validation(r)]


def fit_throughput(rows: list[dict[str, Any]], start: ThroughputCoefficients | None = None) -> ThroughputCoefficients:
    """Fit efficiencies and overheads on the fit rows' median tokens/s (mean |log error|); validation rows
    are dropped here."""
    fit_rows = _time_fit_rows(rows)
    best = _coordinate_descent(start or ThroughputCoefficients(), _TP_BOUNDS, lambda tc: _tp_loss(fit_rows, tc),
                               (0.2, 0.05, 0.01), rounds=8)
    return replace(best, source=f"fitted by ftcalc calibrate on {len(fit_rows)} runs")


def fit_gpu_speed(rows: list[dict[str, Any]], start: ThroughputCoefficients | None = None) -> ThroughputCoefficients:
    """Fit only the per-GPU speed factors (``speed_h200``) on the fit rows, every other time coefficient held:
    a per-GPU calibration (a speed factor per GPU), without refitting what the rest of the model rests on."""
    fit_rows = _time_fit_rows(rows)
    tc = start or ThroughputCoefficients()
    best = _coordinate_descent(tc, {"speed_h200": _TP_BOUNDS["speed_h200"]}, lambda t: _tp_loss(fit_rows, t),
                               (0.2, 0.05, 0.01), rounds=8)
    return replace(best, source=f"{tc.source}; speed_h200 fitted alone on {len(fit_rows)} runs (fit_gpu_speed)")


def coefficients_to_json(c: Coefficients, tc: ThroughputCoefficients | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"memory": asdict(c)}
    if tc is not None:
        out["throughput"] = asdict(tc)
    return out
