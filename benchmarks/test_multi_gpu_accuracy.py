"""Multi-GPU accuracy (issues 7 and 8) on the 2x, 4x and 8xH200 runs, and the time one multi-GPU estimate takes.

Goal: per-GPU device memory within 6 % of measured on every multi-GPU run, tokens/s within 15 %. Met for
device memory on every run (DDP: the simulated allocation sequence of a rank; FSDP: the simulated
three-stream sequence of a rank, ftcalc/alloc_sequence_fsdp.py) and for tokens/s on every run whose forward +
backward the GPU bounds. Not met for tokens/s on two host-bound runs of one configuration (Llama-3.2-3B full
fine-tuning, 1024 tokens per GPU, DDP on 4 GPUs): i-003 +25 % and p-000 +41 %, while m-000, the same
configuration on a third machine, is at +2 %: the host's launch speed, which the model cannot know before the
run (ftcalc.throughput.HOST_BOUND_NOTE). So the full goal is a strict xfail and guards hold today's errors
(docs/multi-gpu.md has the tables).
"""

from __future__ import annotations

import pytest

from ftcalc.calibrate import is_multi_gpu_validation, load_measurements, summarize, validate_multi_gpu_rows
from ftcalc.options import make_options
from ftcalc.parallel import estimate_parallel

ROWS = load_measurements(multi_gpu=True)
VAL = [r for r in ROWS if is_multi_gpu_validation(r)]


def test_one_parallel_estimate_time(benchmark):
    opts = make_options(method="lora", seq_len=4096, batch_size=1)
    e = benchmark(estimate_parallel, "llama-3-70b", opts, "h200", "fsdp", 2)
    assert e.device_used_bytes < 141e9


def test_allocated_per_gpu_on_every_multi_gpu_run():
    offload = {r["run_id"] for r in ROWS if r.get("offload_params")}
    big = {r["run_id"] for r in ROWS if r["model"] == "meta-llama/Llama-3.1-405B"}
    recs = validate_multi_gpu_rows(ROWS)
    assert len(recs) >= 46
    a = summarize([r for r in recs if r["run_id"] not in offload | big], "err_peak_allocated")
    assert a["max_abs"] <= 0.03, a  # the sharding mechanism alone: no fitted term
    # with CPU offload (plan n): n-002 (Llama-3-8B LoRA) +3.7 %, not explained yet (docs/multi-gpu.md)
    assert summarize([r for r in recs if r["run_id"] in offload], "err_peak_allocated")["max_abs"] <= 0.04
    # Llama-3.1-405B LoRA on 8 GPUs (h-002, h-003): -4.8 and -3.7 %, about one gathered decoder layer (5.9 GiB)
    # short at 1024 tokens, not explained yet (no trace); device used is over (+2.4, +3.5 %)
    b = summarize([r for r in recs if r["run_id"] in big], "err_peak_allocated")
    assert b["n"] == 2 and b["max_abs"] <= 0.05, b


def test_regression_guard():
    for recs in (validate_multi_gpu_rows(ROWS), validate_multi_gpu_rows(VAL)):
        d = summarize(recs, "err_device_used")
        t = summarize(recs, "err_tokens_per_second")
        assert d["median_abs"] <= 0.02 and d["max_abs"] <= 0.06 and d["worst_under"] >= -0.05, d
        assert t["median_abs"] <= 0.08, t


def test_tokens_per_second_goal_on_every_gpu_bound_run():
    recs = validate_multi_gpu_rows(ROWS)
    gpu_bound = [r for r in recs if not r["host_bound"]]
    assert len(gpu_bound) >= 38
    assert summarize(gpu_bound, "err_tokens_per_second")["max_abs"] <= 0.15


@pytest.mark.xfail(strict=True, reason="tokens/s on host-bound runs: i-003 +25 % and p-000 +41 %, one configuration "
                   "(Llama-3.2-3B full fine-tuning, 1024 tokens per GPU, DDP on 4 GPUs) that took 0.225 (m-000, +2 %), "
                   "0.277 and 0.310 s per step on three machines of one kind; docs/multi-gpu.md")
def test_issue_7_goal_on_every_multi_gpu_run():
    recs = validate_multi_gpu_rows(ROWS)
    assert summarize(recs, "err_device_used")["max_abs"] <= 0.06
    assert summarize(recs, "err_tokens_per_second")["max_abs"] <= 0.15
