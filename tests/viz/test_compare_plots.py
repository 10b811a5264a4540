"""ftcalc.compare DataFrames and the plot functions (rendered to files, checked non-empty)."""

from __future__ import annotations

import pytest

import ftcalc


def test_compare_has_a_row_per_combination():
    df = ftcalc.compare(models=["8b", "70b"], methods=["lora", "qlora"], gpus=["h100"], seq_lens=[1024, 4096],
                        dataset_tokens=10_000_000)
    assert len(df) == 8 and df["error"].isna().all()
    assert {"device_used_bytes", "fits", "tokens_per_second", "hours", "cost_usd", "mem_weights"} <= set(df.columns)
    q70 = df[(df.model == "meta-llama/Llama-3.1-70B") & (df.method == "qlora") & (df.seq_len == 1024)].iloc[0]
    assert q70.fits and q70.cost_usd > 0
    # memory grows with sequence length for every (model, method)
    for (_, _), g in df.groupby(["model", "method"]):
        assert g.sort_values("seq_len")["device_used_bytes"].is_monotonic_increasing


def test_compare_reports_invalid_rows_instead_of_failing():
    df = ftcalc.compare(models=["llama-3-8b"], methods=["lora"], gpus=["h100"], seq_lens=[4096, 100_000])
    assert df["error"].notna().sum() == 1 and "context" in df["error"].dropna().iloc[0]


def test_plots_render(tmp_path):
    pytest.importorskip("matplotlib")
    from ftcalc.viz.plots import plot_breakdown, plot_memory_sweep, plot_predicted_vs_measured, save

    ests = [ftcalc.estimate("8b", method=m, gpu="h100") for m in ("lora", "qlora")]
    for name, fig in (("b.png", plot_breakdown(ests)), ("s.svg", plot_memory_sweep("8b", "qlora", values=[512, 1024])),
                      ("p.png", plot_predicted_vs_measured())):
        path = tmp_path / name
        save(fig, str(path))
        assert path.stat().st_size > 2000
