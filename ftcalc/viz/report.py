"""``ftcalc report``: a capacity-planning report (Markdown and HTML, with PNG plots) for a design doc.

    ftcalc report --model 70b --method qlora --dataset-tokens 50M -o report.md

Writes ``report.md``, ``report.html`` and the plots in ``report_files/``. Refuses to overwrite an
existing report unless ``--force``.
"""

from __future__ import annotations

import datetime as _dt
import html
from pathlib import Path
from typing import Any

from ftcalc.errors import DataFileError
from ftcalc.sizes import GIB

__all__ = ["write_report"]

DEFAULT_GPUS = ["rtx-4090", "l40s", "a100-80gb", "h100", "h200", "b200"]


def _md_table(df: Any) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(str(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def write_report(model: str, method: str, dataset_tokens: int | None, output: str, seq_len: int = 2048,
                 epochs: float = 1.0, gpus: list[str] | None = None, force: bool = False, top: int = 5) -> list[Path]:
    """Write the Markdown and HTML report and its plots; returns the paths written.

    Raises:
        DataFileError: the output (or its HTML twin) exists and ``force`` is false.
    """
    from ftcalc.measure.calibrate import is_validation, load_measurements, summarize, usable, validate_rows
    from ftcalc.model.comparison import compare
    from ftcalc.model.estimator import estimate
    from ftcalc.solver.search import recommend
    from ftcalc.viz.plots import plot_breakdown, plot_memory_sweep, plot_pareto, save

    out_md = Path(output)
    if out_md.suffix.lower() not in (".md", ".markdown"):
        out_md = out_md.with_suffix(".md")
    out_html = out_md.with_suffix(".html")
    files = out_md.parent / f"{out_md.stem}_files"
    from ftcalc.safe_write import REPORT_MARKERS, check_output, make_dir, write_text

    for p in (out_md, out_html):
        if p.exists() and not force:
            raise DataFileError(f"{p} exists; choose another -o or pass --force to overwrite it")
        check_output(p, marker=REPORT_MARKERS, inputs=[model], force=force, what="report")
    for name in ("breakdown.png", "memory_vs_seq_len.png", "pareto.png"):
        check_output(files / name, marker=(b"ftcalc plot",), inputs=[model], force=force, what="plot")
    make_dir(files)
    gpus = gpus or DEFAULT_GPUS
    methods = ["full", "lora", "qlora"] if method == "auto" else [method]
    df = compare(models=[model], methods=methods, gpus=gpus, seq_lens=[seq_len], dataset_tokens=dataset_tokens,
                        epochs=epochs)
    table = df[["method", "gpu", "device_used_bytes", "fits", "tokens_per_second", "hours", "cost_usd"]].copy()
    table["device used (GiB)"] = (table.pop("device_used_bytes") / GIB).round(1)
    table["tokens/s"] = table.pop("tokens_per_second").round(0)
    if dataset_tokens is not None:
        table["hours (1 GPU)"] = table.pop("hours").astype(float).round(1)
        table["cost USD (cheapest 1-GPU price)"] = table.pop("cost_usd").astype(float).round(2)
        shown = ("tokens/s", "hours (1 GPU)", "cost USD (cheapest 1-GPU price)")
    else:  # no dataset size: the one-GPU table has memory and speed only
        table = table.drop(columns=["hours", "cost_usd"])
        shown = ("tokens/s",)
    for col in shown:
        table[col] = table[col].astype(object).where(table["fits"], "does not fit")
    rec = recommend(model, method=method, dataset_tokens=dataset_tokens, epochs=epochs, seq_len=seq_len, top=max(top, 12))
    plans = rec.to_dataframe()[["rank", "provider", "instance_type", "gpu", "num_gpus", "method", "micro_batch_size",
                                "grad_accum", "gradient_checkpointing", "sharding", "device_used_gib",
                                "tokens_per_second", "usd_per_million_tokens", "est_hours", "est_cost_usd"]].head(top).round(2)
    plans["usd_per_million_tokens"] = rec.to_dataframe()["usd_per_million_tokens"].head(top).round(4)
    if dataset_tokens is None:  # ranked per million trained tokens: no hours or total cost to show
        plans = plans.drop(columns=["est_hours", "est_cost_usd"])
    data = (f"{dataset_tokens / 1e6:,.0f}M tokens x {epochs:g} epoch(s)" if dataset_tokens is not None
            else "no dataset size (plans ranked per million trained tokens; --dataset-tokens adds hours and cost)")
    spec_id = df["model"].iloc[0]
    ests = [estimate(model, method=m, seq_len=seq_len, gpu=rec.plans[0].gpu if rec.plans else None) for m in methods]
    written = []
    for name, fig in (("breakdown.png", plot_breakdown(ests, gpus=[g for g in ("h100", "h200") if g])),
                      ("memory_vs_seq_len.png", plot_memory_sweep(model, methods[-1], gpus=["rtx-4090", "l40s", "h100", "h200"])),
                      ("pareto.png", plot_pareto(rec))):
        written.append(Path(save(fig, str(files / name), force=force, inputs=(model,))))
    rows = load_measurements()
    val = validate_rows([r for r in rows if is_validation(r) and usable(r)])
    acc = summarize([r for r in val if (r["method"] == "full") == (method == "full")], "err_device_used")
    rel = f"{files.name}/"
    md = f"""# Capacity plan: {spec_id}, {method}

Generated by `ftcalc report` on {_dt.date.today().isoformat()}: {data},
sequence length {seq_len}. Memory in GiB (2^30 bytes).

## Memory and time on one GPU

{_md_table(table)}

![memory breakdown]({rel}breakdown.png)

![memory vs sequence length]({rel}memory_vs_seq_len.png)

## {"Cheapest plans" if dataset_tokens is not None else "Cheapest plans per million trained tokens"}

{_md_table(plans)}

![cost vs time]({rel}pareto.png)

{"Left out, though cheaper: " + "; ".join(r.reason for r in rec.rejected[:4]) if rec.rejected else ""}

## How far to trust it

Device memory was predicted within {acc.get('median_abs', float('nan')) * 100:.1f}% (median) and
{acc.get('max_abs', float('nan')) * 100:.1f}% (worst) on {acc.get('n', 0)} held-out H100/H200 runs of this kind of
fine-tuning ({'full' if method == 'full' else 'LoRA/QLoRA'}); see docs/validation.md. GPUs other than H100/H200 are
predicted by transfer; multi-GPU plans are validated on 2x, 4x and 8xH200 only (docs/multi-gpu.md).
"""
    write_text(out_md, md, marker=REPORT_MARKERS, inputs=[model], force=force, what="report")
    import pandas as pd  # noqa: F401  (to_html below)

    body = (f"<h1>Capacity plan: {html.escape(spec_id)}, {html.escape(method)}</h1>"
            f"<p>{html.escape(data)}, sequence length {seq_len}. Memory in GiB.</p>"
            f"<h2>Memory and time on one GPU</h2>{table.to_html(index=False)}"
            f"<img src='{rel}breakdown.png' width='700'><img src='{rel}memory_vs_seq_len.png' width='600'>"
            f"<h2>Cheapest plans</h2>{plans.to_html(index=False)}<img src='{rel}pareto.png' width='650'>"
            f"<h2>How far to trust it</h2><p>Median device-memory error {acc.get('median_abs', float('nan')) * 100:.1f}% "
            f"on {acc.get('n', 0)} held-out runs; see docs/validation.md.</p>")
    write_text(out_html, "<!doctype html><html><head><meta charset='utf-8'><meta name='generator' content='ftcalc report'>"
                        f"<title>{html.escape(spec_id)}</title>"
                        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse;"
                        "font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px}</style></head>"
                        f"<body>{body}</body></html>", marker=REPORT_MARKERS, inputs=[model], force=force, what="report")
    return [out_md, out_html, *written]
