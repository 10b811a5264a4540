"""Speed of the plan solver, recorded by pytest-benchmark; nothing here asserts a wall time.

Targets, read off the recorded medians:
- the search itself (``ftcalc.solver.search.recommend`` in a warm process): under 100 ms
- ``ftcalc recommend`` as a fresh process: under 1 s on a 2-core machine (benchmarks/test_cold_speed.py
  times every command of the table cold)
The sanity checks only make sure each timed call did the whole search and returned plans.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ftcalc.solver.search import recommend

ROOT = Path(__file__).resolve().parent.parent


def _search_70b_qlora():
    return recommend("70b", method="qlora", dataset_tokens=100_000_000)


def _search_8b_auto_every_provider():
    return recommend("8b", method="auto", dataset_tokens=100_000_000, top=10)


def test_search_70b_qlora(benchmark):
    _search_70b_qlora()  # warm the catalog / price / coefficient caches, as a long-lived process would
    rec = benchmark(_search_70b_qlora)
    assert rec.plans and rec.candidates_evaluated > 1000


def test_search_8b_auto_all_methods(benchmark):
    _search_8b_auto_every_provider()
    rec = benchmark(_search_8b_auto_every_provider)
    assert len(rec.plans) == 10 and rec.candidates_evaluated > 5000


def _fresh_process() -> dict:
    r = subprocess.run([sys.executable, "-m", "ftcalc.cli.recommend", "recommend", "--model", "70b", "--method",
                        "qlora", "--dataset-tokens", "100M", "--json"], check=True, capture_output=True, cwd=ROOT)
    return json.loads(r.stdout)


def test_recommend_as_a_fresh_process(benchmark):
    out = benchmark.pedantic(_fresh_process, rounds=5, iterations=1)
    assert out["plans"]
