"""``ftcalc calibrate`` and ``ftcalc validate``: printing and file writing around ftcalc/measure/calibrate.py."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

from ftcalc._paths import data_dir
from ftcalc.errors import DataFileError
from ftcalc.measure.calibrate import (
    coefficients_to_json,
    fit_memory,
    fit_throughput,
    is_multi_gpu_validation,
    is_validation,
    load_measurements,
    summarize,
    usable,
    validate_multi_gpu_rows,
    validate_rows,
)
from ftcalc.model.memory import Coefficients
from ftcalc.model.throughput import ThroughputCoefficients
from ftcalc.sizes import GIB

GOALS = {"device_used_median_abs": 0.03, "device_used_max_abs": 0.06, "device_used_worst_under": -0.03,
         "tokens_per_second_median_abs": 0.10}
# the multi-GPU accuracy goal: per-GPU device memory within 6 % on every multi-GPU run, tokens/s within 15 %
MULTI_GPU_GOALS = {"device_used_max_abs": 0.06, "tokens_per_second_max_abs": 0.15}


def _load(a: argparse.Namespace, multi_gpu: bool = False) -> list[dict[str, Any]]:
    rows = load_measurements(a.measurements, multi_gpu=multi_gpu)
    if not any(usable(r) for r in rows):
        raise DataFileError(f"no usable measurement rows in {a.measurements or data_dir() / 'measurements'}")
    return rows


def validation_table(recs: list[dict[str, Any]]) -> str:
    head = ("| run | gpu | model | method | seq x bs | ckpt | optimizer | precision | phase | allocated GiB meas / pred (err) "
            "| reserved GiB meas / pred (err) | device used GiB meas / pred (err) | tokens/s meas / pred (err) |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in recs:
        def cell(key: str, r: dict[str, Any] = r) -> str:
            return (f"{r['meas_' + key + '_bytes'] / GIB:.2f} / {r['pred_' + key + '_bytes'] / GIB:.2f} "
                    f"({r['err_' + key] * 100:+.1f}%)")
        tp = r.get("err_tokens_per_second")
        tps = (f"{r['meas_tokens_per_second']:.0f} / {r['pred_tokens_per_second']:.0f} ({tp * 100:+.1f}%)"
               if tp is not None and not math.isnan(tp) else "-")
        lines.append(f"| {r['run_id']} | {str(r['gpu']).replace('NVIDIA ', '')} | {r['model'].split('/')[-1]} | {r['method']} "
                     f"| {r['seq_len']} x {r['batch_size']} | {'on' if r['gradient_checkpointing'] else 'off'} "
                     f"| {r['optimizer']} | {r['precision']} | {r['phase']} | {cell('peak_allocated')} "
                     f"| {cell('peak_reserved')} | {cell('device_used')} | {tps} |")
    return head + "\n".join(lines) + "\n"


def summary_lines(recs: list[dict[str, Any]]) -> str:
    out = []
    for key, label in (("err_peak_allocated", "peak allocated"), ("err_peak_reserved", "peak reserved"),
                       ("err_device_used", "device used"), ("err_tokens_per_second", "tokens/s")):
        s = summarize(recs, key)
        if s.get("n"):
            out.append(f"- {label}: n={s['n']}, median |err| {s['median_abs'] * 100:.1f}%, mean |err| "
                       f"{s['mean_abs'] * 100:.1f}%, max |err| {s['max_abs'] * 100:.1f}%, worst under-estimate "
                       f"{s['worst_under'] * 100:+.1f}%, worst over-estimate {s['worst_over'] * 100:+.1f}%")
    return "\n".join(out) + "\n"


def goal_check(recs: list[dict[str, Any]]) -> dict[str, Any]:
    d = summarize(recs, "err_device_used")
    t = summarize(recs, "err_tokens_per_second")
    checks = {
        "device_used_median_abs": (d.get("median_abs", 1), d.get("median_abs", 1) <= GOALS["device_used_median_abs"]),
        "device_used_max_abs": (d.get("max_abs", 1), d.get("max_abs", 1) <= GOALS["device_used_max_abs"]),
        "device_used_worst_under": (d.get("worst_under", -1), d.get("worst_under", -1) >= GOALS["device_used_worst_under"]),
        "tokens_per_second_median_abs": (t.get("median_abs", 1), t.get("median_abs", 1) <= GOALS["tokens_per_second_median_abs"]),
    }
    return {k: {"value": v, "goal": GOALS[k], "met": ok} for k, (v, ok) in checks.items()}


def run_calibrate(a: argparse.Namespace) -> int:
    from ftcalc._paths import user_data_dir
    from ftcalc.safe_write import COEFFICIENT_MARKERS, check_output, write_text

    # the installed package is never written: the default is the per-user data folder
    folder = Path(getattr(a, "out", None) or user_data_dir())
    out = Path(a.output or folder / "coefficients.json")
    report = Path(a.report or folder / "calibration_report.md")
    src = Path(a.measurements or data_dir() / "measurements")
    inputs = [src, *(src.glob("*.jsonl") if src.is_dir() else [])]
    force = getattr(a, "force", False)
    for p in (out, report):
        check_output(p, marker=COEFFICIENT_MARKERS, inputs=inputs, force=force, what="calibration output")
    rows = _load(a)
    fit_rows = [r for r in rows if not is_validation(r)]
    val_rows = [r for r in rows if is_validation(r)]
    c = fit_memory(fit_rows)
    tc = fit_throughput(fit_rows)
    payload = coefficients_to_json(c, tc)
    payload["date"] = _dt.date.today().isoformat()
    payload["fit_runs"] = sorted(r["run_id"] for r in fit_rows if usable(r))
    payload["split"] = "data/measurements/split.json"
    n = len(payload["fit_runs"])
    payload["provenance"] = {  # which function made each value (tests/measure/test_coefficients_file.py)
        section: {k: f"ftcalc/measure/calibrate.py {fn} on the {n} runs in fit_runs" for k, v in payload[section].items()
                  if isinstance(v, (int, float)) and k != "fitted_on"}
        for section, fn in (("memory", "fit_memory"), ("throughput", "fit_throughput"))}
    write_text(out, json.dumps(payload, indent=2) + "\n", marker=COEFFICIENT_MARKERS, inputs=inputs, force=force,
               what="calibration output")
    fit_recs = validate_rows(fit_rows, c, tc)
    val_recs = validate_rows(val_rows, c, tc)
    write_text(report,
        "# Calibration report\n\nWritten by `ftcalc calibrate` on " + payload["date"] + f".\n\n"
        f"{len([r for r in fit_rows if usable(r)])} fit runs, {len([r for r in val_rows if usable(r)])} validation runs "
        "(split rule: data/measurements/split.json). Runs that ran out of memory or failed are not fitted.\n\n"
        "## Coefficients\n\n```json\n" + json.dumps(coefficients_to_json(c, tc), indent=2) + "\n```\n\n"
        "## Fit runs\n\n" + summary_lines(fit_recs) + "\n" + validation_table(fit_recs) +
        "\n## Validation runs (never fitted)\n\n" + summary_lines(val_recs) + "\n" + validation_table(val_recs),
        marker=COEFFICIENT_MARKERS, inputs=inputs, force=force, what="calibration output")
    if getattr(a, "json", False):
        print(json.dumps({"coefficients_file": str(out), "report": str(report), **coefficients_to_json(c, tc),
                          "fit": {k: summarize(fit_recs, k) for k in ("err_peak_allocated", "err_device_used", "err_tokens_per_second")},
                          "validation": {k: summarize(val_recs, k) for k in ("err_peak_allocated", "err_device_used", "err_tokens_per_second")}},
                         indent=2))
        return 0
    print(f"wrote {out} and {report}; use them with `ftcalc estimate --coefficients {out}`")
    print("fit runs:\n" + summary_lines(fit_recs) + "validation runs:\n" + summary_lines(val_recs), end="")
    return 0


def _print_error_rows(recs: list[dict[str, Any]], heads: tuple[str, ...], keys: tuple[str, ...],
                      how: bool = False) -> None:
    """One line per run: id, model, method (and GPUs x distribution), seq x batch, then the error columns."""
    extra = f" {'how':8s}" if how else ""
    print(f"{'run':6s} {'model':15s} {'method':6s}{extra} {'seq x bs':>10s} " + " ".join(f"{h:>7s}" for h in heads))
    for r in recs:
        where = f" {str(r['num_gpus']) + 'x ' + str(r['distribution']):8s}" if how else ""
        errs = " ".join(f"{r[k] * 100:+6.1f}%" for k in keys)  # nan prints as nan
        mark = "  host-bound" if r.get("host_bound") else ""
        print(f"{r['run_id']:6s} {r['model'].split('/')[-1][:15]:15s} {r['method']:6s}{where} "
              f"{r['seq_len']:>5d} x {r['batch_size']:<3d} {errs}{mark}")
    print()


def multi_gpu_goal_check(recs: list[dict[str, Any]]) -> dict[str, Any]:
    """The multi-GPU accuracy goals (``MULTI_GPU_GOALS``) over ``recs``, and the tokens/s goal over the runs
    the model calls GPU-bound alone (the host-bound ones wait on the host's launches, whose speed varies between
    machines: HOST_BOUND_NOTE)."""
    d = summarize(recs, "err_device_used")
    t = summarize(recs, "err_tokens_per_second")
    g = summarize([r for r in recs if not r.get("host_bound")], "err_tokens_per_second")
    checks = {"device_used_max_abs": (d.get("max_abs", 1), "device_used_max_abs"),
              "tokens_per_second_max_abs": (t.get("max_abs", 1), "tokens_per_second_max_abs"),
              "tokens_per_second_max_abs_gpu_bound": (g.get("max_abs", 1), "tokens_per_second_max_abs")}
    return {k: {"value": v, "goal": MULTI_GPU_GOALS[goal], "met": v <= MULTI_GPU_GOALS[goal]}
            for k, (v, goal) in checks.items()}


def _run_validate_multi_gpu(a: argparse.Namespace) -> int:
    rows = _load(a, multi_gpu=True)
    chosen = rows if a.all else [r for r in rows if is_multi_gpu_validation(r)]
    recs = validate_multi_gpu_rows(chosen)
    goals = multi_gpu_goal_check(recs)
    keys = ("err_peak_allocated", "err_device_used", "err_tokens_per_second")
    if a.json:
        print(json.dumps({"rows": recs, "summary": {k: summarize(recs, k) for k in keys}, "goals": goals},
                         indent=2, default=str))
        return 0
    print("per GPU (the fullest rank); tokens/s of all GPUs; relative errors, + = over-estimate")
    _print_error_rows(recs, ("alloc", "used", "tok/s"), ("err_peak_allocated", "err_device_used",
                                                         "err_tokens_per_second"), how=True)
    for key, label in zip(keys, ("peak allocated", "device used", "tokens/s"), strict=True):
        s = summarize(recs, key)
        if s.get("n"):
            print(f"- {label}: n={s['n']}, median |err| {s['median_abs'] * 100:.1f}%, max |err| {s['max_abs'] * 100:.1f}%, "
                  f"worst under {s['worst_under'] * 100:+.1f}%, worst over {s['worst_over'] * 100:+.1f}%")
    for k, g in goals.items():
        print(f"goal {k}: {g['value'] * 100:.1f}% vs {g['goal'] * 100:.0f}% -> {'met' if g['met'] else 'NOT met'}")
    return 0


def run_validate(a: argparse.Namespace) -> int:
    if getattr(a, "multi_gpu", False):
        return _run_validate_multi_gpu(a)
    rows = _load(a)
    chosen = rows if a.all else [r for r in rows if is_validation(r)]
    recs = validate_rows(chosen)
    goals = goal_check(recs)
    if a.json:
        print(json.dumps({"rows": recs, "summary": {k: summarize(recs, k) for k in
                          ("err_peak_allocated", "err_peak_reserved", "err_device_used", "err_tokens_per_second")},
                          "goals": goals, "coefficients": str(Coefficients.__name__)}, indent=2, default=str))
        return 0
    print("relative errors, + = over-estimate")
    _print_error_rows(recs, ("alloc", "res", "used", "tok/s"), ("err_peak_allocated", "err_peak_reserved",
                                                                "err_device_used", "err_tokens_per_second"))
    for line in summary_lines(recs).splitlines():
        print(line.replace(", worst over-estimate", ",\n   worst over-estimate").replace(", max |err|", ",\n   max |err|"))
    for k, g in goals.items():
        print(f"goal {k}: {g['value'] * 100:+.1f}% vs {g['goal'] * 100:+.0f}% -> {'met' if g['met'] else 'NOT met'}")
    return 0


__all__ = ["run_calibrate", "run_validate", "goal_check", "multi_gpu_goal_check", "GOALS", "MULTI_GPU_GOALS",
           "ThroughputCoefficients"]
