"""Regenerate the measured tables of docs/multi-gpu.md from the measurement database.

    python scripts/make_multigpu_docs.py      # writes docs/multi-gpu_tables.md and docs/img/multi_gpu.png

Predictions are ftcalc.model.parallel.estimate_parallel (ftcalc/model/sharding.py with data/solver_assumptions.json) for
each multi-GPU row (data/measurements rows with num_gpus > 1); scaling efficiency is measured against the
one-GPU run of the same configuration on the same GPU model where the database has one.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ftcalc.measure.calibrate import (  # noqa: E402
    load_measurements,
    row_options,
    summarize,
    usable,
    validate_multi_gpu_rows,
)
from ftcalc.tables.hardware import get_gpu  # noqa: E402
from ftcalc.model.parallel import estimate_parallel  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
GIB = 2**30
KEY = ("model", "method", "seq_len", "batch_size", "gradient_checkpointing", "optimizer", "precision", "lora_r",
       "gpu_name")


def _twin(row: dict, singles: list[dict]) -> dict | None:
    """The one-GPU run of the same configuration on the same GPU model, if measured."""
    k = tuple(row.get(x) for x in KEY)
    return next((s for s in singles if tuple(s.get(x) for x in KEY) == k and s.get("tokens_per_second")), None)


def _plans(recs: dict, validation: bool) -> list[str]:
    """The plans (run id prefixes) of the blind runs or of those that set the figures, in order."""
    return sorted({r["run_id"].split("-")[0] for r in recs.values() if bool(r["validation"]) == validation})


def main() -> None:
    multi = [r for r in load_measurements(multi_gpu=True) if usable(r)]
    singles = [r for r in load_measurements() if usable(r)]
    recs = {r["run_id"]: r for r in validate_multi_gpu_rows(multi)}
    lines = ["<!-- written by scripts/make_multigpu_docs.py; do not edit by hand -->", "",
             "| run | set | model | method | GPUs | seq x bs | ckpt | optimizer | precision | allocated GiB/GPU meas / pred "
             "(err) | device used GiB/GPU meas / pred (err) | tokens/s (all GPUs) meas / pred (err) | bound by |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in multi:
        r = recs[row["run_id"]]

        def cell(k: str, r: dict = r) -> str:
            return f"{r['meas_' + k + '_bytes'] / GIB:.2f} / {r['pred_' + k + '_bytes'] / GIB:.2f} ({r['err_' + k] * 100:+.1f}%)"

        lines.append(
            f"| {r['run_id']} | {'blind' if r['validation'] else 'set the figures'} | {r['model'].split('/')[-1]} "
            f"| {r['method']} | {r['num_gpus']}x {r['distribution']} | {r['seq_len']} x {r['batch_size']} "
            f"| {'on' if r['gradient_checkpointing'] else 'off'} | {r['optimizer']} | {r['precision']} "
            f"| {cell('peak_allocated')} | {cell('device_used')} | {r['meas_tokens_per_second']:.0f} / "
            f"{r['pred_tokens_per_second']:.0f} ({r['err_tokens_per_second'] * 100:+.1f}%) "
            f"| {'host' if r['host_bound'] else 'GPU'} |")
    lines += ["", "Summary (relative error, + = over-estimate):", ""]
    blind = ", ".join(_plans(recs, True))
    for label, subset in (("all multi-GPU runs", list(recs.values())),
                          (f"blind runs (plans {blind})", [r for r in recs.values() if r["validation"]]),
                          ("GPU-bound runs (the model's host launch time below its GPU time)",
                           [r for r in recs.values() if not r["host_bound"]]),
                          ("host-bound runs", [r for r in recs.values() if r["host_bound"]])):
        parts = []
        for key, name in (("err_peak_allocated", "allocated"), ("err_device_used", "device used"),
                          ("err_tokens_per_second", "tokens/s")):
            s = summarize(subset, key)
            parts.append(f"{name}: median |err| {s['median_abs'] * 100:.1f}%, max |err| {s['max_abs'] * 100:.1f}% "
                         f"(worst under {s['worst_under'] * 100:+.1f}%, over {s['worst_over'] * 100:+.1f}%)")
        lines.append(f"- {label} (n={len(subset)}): " + "; ".join(parts))

    lines += ["", "Scaling against one GPU (tokens/s per GPU on N GPUs / tokens/s of the same configuration on one "
              "GPU of the same model; measured where the one-GPU run exists):", "",
              "| run | one-GPU run | tokens/s per GPU, N GPUs | tokens/s, 1 GPU | measured efficiency | predicted "
              "efficiency |", "|---|---|---|---|---|---|"]
    for row in multi:
        twin = _twin(row, singles)
        if twin is None:
            continue
        gpu = get_gpu(row["gpu_name"]).gpu
        opts = row_options(row)
        par = estimate_parallel(row["model"], opts, gpu, row["distribution"], int(row["num_gpus"]))
        one = estimate_parallel(row["model"], opts, gpu, "single", 1)
        per_gpu = row["tokens_per_second"] / row["num_gpus"]
        lines.append(f"| {row['run_id']} | {twin['run_id']} | {per_gpu:.0f} | {twin['tokens_per_second']:.0f} "
                     f"| {per_gpu / twin['tokens_per_second']:.3f} "
                     f"| {par.tokens_per_second_per_gpu / one.tokens_per_second_per_gpu:.3f} |")
    out = ROOT / "docs" / "multi-gpu_tables.md"
    out.write_text("\n".join(lines) + "\n")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, key, title in ((axes[0], "device_used_bytes", "device memory per GPU (GiB)"),
                           (axes[1], "tokens_per_second", "tokens/s, all GPUs")):
        scale = GIB if key.endswith("bytes") else 1.0
        for r in recs.values():
            color = "tab:red" if r["method"] == "full" else ("tab:green" if r["method"] == "qlora" else "tab:blue")
            ax.scatter(r["meas_" + key] / scale, r["pred_" + key] / scale, c=color,
                       marker="s" if r["validation"] else "o", s=40, alpha=0.8,
                       edgecolors="k" if r.get("host_bound") else "none", linewidths=1.2)
            ax.annotate(r["run_id"], (r["meas_" + key] / scale, r["pred_" + key] / scale), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        lim = max(max(r["meas_" + key], r["pred_" + key]) for r in recs.values()) / scale * 1.08
        low = 0.0 if key.endswith("bytes") else min(min(r["meas_" + key], r["pred_" + key]) for r in recs.values()) * 0.8
        band = 0.06 if key.endswith("bytes") else 0.15
        xs = [low, lim]
        ax.plot(xs, xs, "k-", lw=0.8)
        ax.fill_between(xs, [x * (1 - band) for x in xs], [x * (1 + band) for x in xs], color="grey", alpha=0.15,
                        label=f"±{band * 100:.0f}% (multi-GPU goal)")
        if low:  # tokens/s spans 1.6k (70B) to 31k (3B): log axes
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_xlim(low, lim)
        ax.set_ylim(low, lim)
        ax.set_xlabel("measured")
        ax.set_ylabel("predicted")
        ax.set_title(title)
        ax.legend(loc="upper left", fontsize=8)
    counts = sorted({int(r["num_gpus"]) for r in recs.values()})
    fig.suptitle(f"{', '.join(f'{n}x' for n in counts)}H200 runs: circles set the figures (plans {', '.join(_plans(recs, False))}), squares "
                 f"blind (plans {', '.join(_plans(recs, True))}); red full, blue LoRA, green QLoRA; black edge: "
                 "host-bound", fontsize=9)
    fig.tight_layout()
    img = ROOT / "docs" / "img" / "multi_gpu.png"
    fig.savefig(img, dpi=110)
    print(f"wrote {out} and {img}")


if __name__ == "__main__":
    main()
