"""Plots for notebooks and reports (matplotlib, the ``[plot]`` extra). Each function returns the figure.

    ftcalc estimate --model 8b --method qlora --gpu h100 --plot breakdown.png
    from ftcalc.viz.plots import plot_breakdown, plot_memory_sweep, plot_predicted_vs_measured

Memory is shown in GiB (2^30 bytes); GPU capacities are the totals CUDA reports (data/gpus.csv).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftcalc.sizes import GIB

__all__ = ["plot_breakdown", "plot_memory_sweep", "plot_predicted_vs_measured", "plot_pareto", "save"]

_COLORS = {
    "weights": "#4c72b0", "lora_adapters": "#8172b2", "gradients": "#dd8452", "optimizer_states": "#c44e52",
    "optimizer_step_transient": "#da8bc3", "activations": "#55a868", "logits_and_loss": "#937860",
    "backward_transient": "#8c8c8c", "autocast_weight_copies": "#ccb974", "misc_allocated": "#64b5cd",
    "allocator_fragmentation": "#bbbbbb", "cuda_context": "#444444", "paged_optimizer_states": "#e377c2",
}


def _plt() -> Any:
    try:
        import matplotlib.pyplot as plt  # the backend is the environment's (inline in Jupyter, Agg headless)
    except ImportError:
        from ftcalc.errors import MissingDependencyError

        raise MissingDependencyError("plots need matplotlib: pip install '.[plot]' in the ftcalc source folder") from None
    return plt


def plot_breakdown(estimates: list[Any], gpus: list[str] | None = None, title: str | None = None) -> Any:
    """Stacked bars of the memory components of each estimate, with horizontal lines at GPU capacities."""
    from ftcalc.tables.hardware import get_gpu

    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(estimates) + 3), 5))
    labels = [f"{e.model.split('/')[-1]}\n{e.method} {e.seq_len}x{e.batch_size}" for e in estimates]
    comps = [k for k in _COLORS if any(e.breakdown.get(k, 0) for e in estimates)]
    bottom = [0.0] * len(estimates)
    for comp in comps:
        vals = [e.breakdown.get(comp, 0) / GIB for e in estimates]
        ax.bar(labels, vals, bottom=bottom, color=_COLORS[comp], label=comp.replace("_", " "))
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    for name in gpus or sorted({e.gpu for e in estimates if e.gpu}):
        g = get_gpu(name)
        ax.axhline(g.memory_bytes / GIB, ls="--", lw=1, color="k")
        ax.text(-0.45, g.memory_bytes / GIB, f"{g.gpu} {g.memory_bytes / GIB:.0f} GiB", va="bottom",
                ha="left", fontsize=8)
    ax.set_ylabel("GiB (device used, by component)")
    ax.set_title(title or "Peak GPU memory by component")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig


def plot_memory_sweep(model: str, method: str, vary: str = "seq_len", values: list[int] | None = None,
                      gpus: list[str] | None = None, **options: Any) -> Any:
    """Device memory vs sequence length or batch size, with the OOM line of each GPU."""
    from ftcalc.model.estimator import estimate
    from ftcalc.tables.hardware import get_gpu

    plt = _plt()
    if vary not in ("seq_len", "batch_size"):
        from ftcalc.errors import InvalidArgumentError

        raise InvalidArgumentError(f"vary={vary!r}: expected seq_len or batch_size")
    values = values or ([512, 1024, 2048, 4096, 8192, 16384] if vary == "seq_len" else [1, 2, 4, 8, 16, 32])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for ckpt in (True, False):
        ys = []
        for v in values:
            kw = dict(options, method=method, gradient_checkpointing=ckpt, **{vary: v})
            ys.append(estimate(model, **kw).device_used_bytes / GIB)
        ax.plot(values, ys, marker="o", label=f"checkpointing {'on' if ckpt else 'off'}")
    for name in gpus or ["rtx-4090", "l40s", "h100", "h200"]:
        g = get_gpu(name)
        ax.axhline(g.memory_bytes / GIB, ls="--", lw=1, color="grey")
        ax.text(values[0], g.memory_bytes / GIB, f"{g.gpu} (OOM above)", va="bottom", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(values)
    ax.set_xticklabels([str(v) for v in values])
    ax.set_xlabel(vary.replace("_", " "))
    ax.set_ylabel("predicted device memory used (GiB)")
    ax.set_title(f"{model} {method}: memory vs {vary.replace('_', ' ')}")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_predicted_vs_measured(rows: list[dict[str, Any]] | None = None) -> Any:
    """Predicted vs measured device memory for the measurement database (validation runs highlighted)."""
    from ftcalc.measure.calibrate import is_validation, load_measurements, usable, validate_rows

    plt = _plt()
    rows = [r for r in (rows if rows is not None else load_measurements()) if usable(r)]
    recs = validate_rows(rows)
    val = {r["run_id"] for r in rows if is_validation(r)}
    fig, ax = plt.subplots(figsize=(6, 6))
    for method, color in (("full", "tab:red"), ("lora", "tab:blue"), ("qlora", "tab:green")):
        for held, marker in ((False, "o"), (True, "s")):
            pts = [r for r in recs if r["method"] == method and (r["run_id"] in val) == held]
            ax.scatter([r["meas_device_used_bytes"] / GIB for r in pts], [r["pred_device_used_bytes"] / GIB for r in pts],
                       c=color, marker=marker, alpha=0.8 if held else 0.35,
                       label=f"{method} ({'validation' if held else 'fit'})")
    hi = max((r["meas_device_used_bytes"] for r in recs), default=GIB) / GIB * 1.05
    ax.plot([0, hi], [0, hi], "k-", lw=0.8)
    ax.set_xlabel("measured device used (GiB)")
    ax.set_ylabel("predicted (GiB)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save(fig: Any, path: str, force: bool = False, inputs: tuple[object, ...] = ()) -> str:
    """Save as PNG, SVG or PDF (by extension) through ftcalc.safe_write: atomically, never over a file that
    is not an ftcalc plot unless ``force``; the file's metadata says it is an ftcalc plot."""
    from ftcalc.safe_write import PLOT_FORMATS, PLOT_MARKERS, atomic_output

    suffix = Path(path).suffix.lower()
    meta = {"Software": "ftcalc plot"} if suffix == ".png" else {"Creator": "ftcalc plot"}
    with atomic_output(path, marker=PLOT_MARKERS, inputs=inputs, force=force, what="plot",
                       suffixes=PLOT_FORMATS) as tmp:
        fig.savefig(tmp, dpi=120, format=suffix.lstrip("."), metadata=meta)
    return path


def plot_pareto(rec: Any, title: str | None = None) -> Any:
    """Cost vs time of every plan of a recommendation, the Pareto front (no plan both cheaper and faster) drawn."""
    plt = _plt()
    plans = list(rec.plans) + list(getattr(rec, "pareto_extra", []) or [])
    fig, ax = plt.subplots(figsize=(7.5, 5))
    gpus = sorted({p.gpu for p in plans})
    cmap = plt.get_cmap("tab10")
    sized = getattr(rec, "dataset_tokens", 0) is not None
    if sized:
        def xy(p: Any) -> tuple[float, float]:
            return p.est_hours, p.est_cost_usd
    else:  # no dataset size: hours and USD per million trained tokens
        def xy(p: Any) -> tuple[float, float]:
            return 1e6 / p.tokens_per_second / 3600.0, p.usd_per_million_tokens
    for k, g in enumerate(gpus):
        pts = [xy(p) for p in plans if p.gpu == g]
        ax.scatter([x for x, _ in pts], [y for _, y in pts], color=cmap(k % 10), label=g, s=40)
    front, best_cost = [], float("inf")
    for p in sorted(plans, key=xy):
        if xy(p)[1] < best_cost:
            front.append(p)
            best_cost = xy(p)[1]
    ax.step([xy(p)[0] for p in front], [xy(p)[1] for p in front], where="post", color="k", lw=1,
            label="Pareto front")
    for p in front:
        ax.annotate(f"{p.num_gpus}x {p.gpu} {p.provider}", xy(p), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("estimated hours" if sized else "hours per million trained tokens")
    ax.set_ylabel("estimated cost (USD)" if sized else "USD per million trained tokens")
    ax.set_title(title or f"{rec.model.split('/')[-1]} {rec.method}: cost vs time of the plans")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
