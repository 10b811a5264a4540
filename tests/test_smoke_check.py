"""scripts/check_smoke.py, the judge of the GPU smoke plan, on recorded rows: plan h's failed first attempt
(shards built in host memory) fails it, the rerun and the CPU-offload runs pass, and a row that ran but left its
FSDP shards off the GPU is caught even when it did not fail."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_smoke", ROOT / "scripts" / "check_smoke.py")
check_smoke = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_smoke)


def _rows(name):
    return [json.loads(x) for x in (ROOT / "data" / "measurements" / name).read_text().splitlines() if x.strip()]


def test_failed_first_attempt_fails_the_smoke(capsys):
    assert len(check_smoke.problems(_rows("runs-h200x8-h0.jsonl"))) == 3
    assert check_smoke.main([str(ROOT / "data" / "measurements" / "runs-h200x8-h0.jsonl")]) == 1
    assert "3 problem(s)" in capsys.readouterr().out


def test_good_runs_pass_offload_included():
    assert check_smoke.problems(_rows("runs-h200x8-h.jsonl")) == []
    offload = [r for r in _rows("runs-h200x2-n.jsonl") + _rows("runs-h200x2-o.jsonl") if r["outcome"] == "ok"]
    assert offload and check_smoke.problems(offload) == []


def test_shards_off_the_gpu_are_caught_without_an_error():
    row = _rows("runs-h200x8-h.jsonl")[0]
    for rank in row["per_rank"]:
        rank["allocated_after_load_bytes"] = 1024  # what the bug left on every rank
    assert "not on the GPU" in check_smoke.problems([row])[0]
    row["offload_params"] = True
    assert check_smoke.problems([row]) == []
