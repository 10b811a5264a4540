"""Speed of the estimator, recorded by pytest-benchmark; nothing here asserts a wall time (a loaded 2-core CI
machine doubles it).

Targets, read off the recorded medians:
- one estimate in-process: under 1 ms
- a sweep of 10,000 configurations: under 1 s
- `ftcalc estimate` as a fresh process: under 1 s wall on a 2-core machine
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import ftcalc
from ftcalc.model.memory import estimate_memory, load_coefficients
from ftcalc.model.options import TrainingOptions
from ftcalc.tables.catalog import resolve_model
from ftcalc.tables.inventory import inventory

ROOT = Path(__file__).resolve().parent.parent


def test_one_estimate_in_process(benchmark):
    ftcalc.estimate("70b", method="qlora", seq_len=2048, gpu="h100")  # warm caches
    est = benchmark(ftcalc.estimate, "70b", method="qlora", seq_len=2048, gpu="h100")
    assert est.fits


def _sweep() -> int:
    spec = resolve_model("8b")
    inv = inventory(spec.arch)
    c = load_coefficients()
    n = 0
    grid = itertools.product(("full", "lora", "qlora"), (256, 512, 1024, 2048, 4096), range(1, 17),
                             (True, False), ("adamw_torch", "adamw_8bit"), (8, 16, 32, 64, 128, 256, 512), (1, 2))
    for method, seq, bs, ckpt, opt, r, _ in itertools.islice(grid, 10_000):
        opts = TrainingOptions.model_construct(
            method=method, seq_len=seq, batch_size=bs, gradient_checkpointing=ckpt, optimizer=opt, lora_r=r,
            precision="bf16-true", lora_alpha=32, lora_dropout=0.05,
            lora_targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
            attention="auto", loss="standard", quant_type="nf4", double_quant=True, num_gpus=1)
        estimate_memory(spec.arch, inv, opts, c)
        n += 1
    return n


def test_sweep_of_10000_configurations(benchmark):
    n = benchmark.pedantic(_sweep, rounds=3, iterations=1)
    assert n == 10_000


def _fresh_process() -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ftcalc.cli.main", "estimate", "--model", "70b", "--method", "qlora",
                    "--gpu", "h100", "--json"], check=True, capture_output=True, cwd=ROOT)


def test_estimate_as_a_fresh_process(benchmark):
    r = benchmark.pedantic(_fresh_process, rounds=5, iterations=1)
    assert b'"fits"' in r.stdout
