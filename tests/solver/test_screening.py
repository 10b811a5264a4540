"""The screened search (solver.SCREEN, the default) returns what the exhaustive one returns.

recommend simulates the caching allocator only for the candidates whose verdict or quoted bytes depend on it
(solver._Candidates.settle / exact_argmin); with ``SCREEN = False`` every candidate's gaps are simulated first
(the exhaustive evaluation). Over a grid of queries (models of 0.6B to 405B parameters, every
method, 1 to 8 GPUs, plans that fit, near-misses on one GPU, constraints that bind, refusals) both must give
the same plans, rejected alternatives and refusal messages, byte for byte; and every candidate the screened
search simulated must have the exhaustive search's device memory and fit verdict.
"""

from __future__ import annotations

import numpy as np
import pytest

from ftcalc.errors import FtcalcError
from ftcalc.solver import search as solver

M = 1_000_000
QUERIES = [
    dict(model="qwen3-0.6b", method="full", dataset_tokens=10 * M),
    dict(model="llama3.2-1b", method="full", dataset_tokens=10 * M, gpu="rtx-4090"),
    dict(model="llama3.2-1b", method="auto", dataset_tokens=10 * M, max_gpus=2),
    dict(model="llama3.2-3b", method="full", dataset_tokens=10 * M, gpu="rtx-4090", max_gpus=4),
    dict(model="llama3.2-3b", method="lora", dataset_tokens=10 * M, seq_len=4096),
    dict(model="8b", method="lora", dataset_tokens=100 * M),
    dict(model="8b", method="qlora", dataset_tokens=100 * M, gpu="rtx-4090"),
    dict(model="8b", method="full", dataset_tokens=100 * M),
    dict(model="8b", method="full", dataset_tokens=100 * M, gpu="h100", max_gpus=1),  # near-miss on one GPU
    dict(model="8b", method="full", dataset_tokens=100 * M, gpu="l40s", max_gpus=2),
    dict(model="8b", method="auto", dataset_tokens=100 * M),
    dict(model="8b", method="auto", dataset_tokens=100 * M, objective="time"),
    dict(model="8b", method="full", objective="time"),  # no dataset size: per million tokens / tokens/s
    dict(model="8b", method="auto"),
    dict(model="8b", method="full", dataset_tokens=100 * M, deadline_hours=2),
    dict(model="8b", method="full", dataset_tokens=100 * M, budget_usd=20),
    dict(model="gemma2-9b", method="full", dataset_tokens=20 * M, max_gpus=4),  # tied: not FSDP-simulated
    dict(model="qwen2.5-14b", method="full", dataset_tokens=20 * M, gpu=["h100", "h200"]),
    dict(model="qwen2.5-14b", method="lora", dataset_tokens=20 * M, gpu="l40s", max_gpus=2),
    dict(model="qwen2.5-32b", method="qlora", dataset_tokens=20 * M, gpu="rtx-4090", max_gpus=8),
    dict(model="qwen2.5-32b", method="full", dataset_tokens=20 * M, max_gpus=8, spot=True),
    dict(model="70b", method="qlora", dataset_tokens=100 * M),
    dict(model="70b", method="qlora"),
    dict(model="70b", method="qlora", dataset_tokens=100 * M, gpu="h100", max_gpus=1),
    dict(model="70b", method="lora", dataset_tokens=100 * M, max_gpus=2),
    dict(model="70b", method="full", dataset_tokens=10 * M),
    dict(model="70b", method="full", dataset_tokens=10 * M, gpu="h100", max_gpus=1),  # offload only
    dict(model="70b", method="full", dataset_tokens=10 * M, gpu="h100", max_gpus=1, provider="runpod"),
    dict(model="70b", method="full", dataset_tokens=1 * M, gpu="rtx-4090", seq_len=1024),
    dict(model="70b", method="auto", dataset_tokens=50 * M, max_gpus=4),
    dict(model="70b", method="qlora", dataset_tokens=200 * M, deadline_hours=1),  # deadline refused
    dict(model="405b", method="full", dataset_tokens=100 * M),  # refused: no plan exists
    dict(model="405b", method="qlora", dataset_tokens=100 * M),
    dict(model="405b", method="lora", dataset_tokens=100 * M, gpu="h200"),
]


def _run(kw: dict, screen: bool, monkeypatch) -> tuple:
    seen = []

    class Recording(solver._Candidates):
        def __init__(self, *a, **k) -> None:
            super().__init__(*a, **k)
            seen.append(self)

    monkeypatch.setattr(solver, "SCREEN", screen)
    monkeypatch.setattr(solver, "_Candidates", Recording)
    try:
        out = solver.recommend(**kw).to_dict()
    except FtcalcError as e:
        out = f"{type(e).__name__}: {e}"
    return out, seen[0] if seen else None


@pytest.mark.parametrize("kw", QUERIES, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_screened_search_equals_exhaustive(kw, monkeypatch):
    fast, c_fast = _run(kw, True, monkeypatch)  # first, while this query's simulations are not cached yet
    full, c_full = _run(kw, False, monkeypatch)
    assert fast == full
    assert c_full is not None and not c_full.pending.any()
    exact = ~c_fast.pending  # every candidate whose gaps the screened search has (simulated or not needed)
    assert np.array_equal(c_fast.used[exact], c_full.used[exact])
    assert np.array_equal(c_fast.fits[exact], c_full.fits[exact])
    # a candidate left pending either cannot fit (its lower bound is over the GPU) or could not be chosen
    assert (c_fast.used[~exact] <= c_full.used[~exact]).all()
    assert not (c_full.fits & ~c_fast.fits).any()


def test_the_grid_covers_what_it_claims():
    methods = {kw["method"] for kw in QUERIES}
    assert methods == {"full", "lora", "qlora", "auto"} and len(QUERIES) >= 30
    gpus = {kw.get("max_gpus", 8) for kw in QUERIES}
    assert {1, 2, 4, 8} <= gpus
