"""`ftcalc report`: files written, never overwritten without --force; recommend --plot."""

from __future__ import annotations

import pytest

from ftcalc.cli.main import main


def test_report_writes_markdown_html_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plan.md"
    assert main(["report", "--model", "8b", "--method", "qlora", "--dataset-tokens", "20M", "-o", str(out)]) == 0
    text = out.read_text()
    assert "Cheapest plans" in text and "plan_files/pareto.png" in text
    assert (tmp_path / "plan.html").read_text().startswith("<!doctype html>")
    for name in ("breakdown.png", "memory_vs_seq_len.png", "pareto.png"):
        assert (tmp_path / "plan_files" / name).stat().st_size > 5000
    before = out.read_text()
    assert main(["report", "--model", "8b", "--method", "lora", "--dataset-tokens", "20M", "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_text() == before


def test_recommend_plot(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "pareto.svg"
    assert main(["recommend", "--model", "8b", "--method", "lora", "--dataset-tokens", "10M", "--plot", str(out)]) == 0
    assert out.read_text().lstrip().startswith("<?xml")


def test_report_and_plot_without_a_dataset_size(tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "rate.md"
    assert main(["report", "--model", "8b", "--method", "lora", "-o", str(out)]) == 0
    text = out.read_text()
    assert "per million trained tokens" in text and "usd_per_million_tokens" in text and "est_cost_usd" not in text
    assert (tmp_path / "rate_files" / "pareto.png").stat().st_size > 5000
    svg = tmp_path / "rate.svg"
    assert main(["recommend", "--model", "8b", "--method", "lora", "--plot", str(svg)]) == 0
    assert svg.read_text().lstrip().startswith("<?xml")
