"""Multi-GPU accuracy (issue 7) on the 2xH200 and 4xH200 runs, and the time one multi-GPU estimate takes.

Goal: per-GPU device memory within 6 % of measured on every multi-GPU run, tokens/s within 15 %. Met for
the per-GPU allocated peak (the sharding mechanism) and, since the fourth session, for device memory on every
run (DDP: the simulated allocation sequence of a rank; FSDP: the simulated three-stream sequence of a rank,
ftcalc/alloc_sequence_fsdp.py). Not met for tokens/s on one run, i-003 (+25 %: Llama-3.2-3B full fine-tuning,
1024 tokens per step on 4 GPUs, launch-bound; its one-GPU twin i-005 on the same machine is missed by as much, and
the blind repeat on another machine, m-000, is at +2 %), so the full goal is a strict xfail and a regression
guard holds today's errors (docs/multi-gpu.md has the tables).
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
    recs = validate_multi_gpu_rows(ROWS)
    assert len(recs) >= 37
    a = summarize([r for r in recs if r["run_id"] not in offload], "err_peak_allocated")
    assert a["max_abs"] <= 0.03, a  # the sharding mechanism alone: no fitted term
    # with CPU offload (plan n): n-002 (Llama-3-8B LoRA) +3.7 %, not explained yet (docs/multi-gpu.md)
    assert summarize([r for r in recs if r["run_id"] in offload], "err_peak_allocated")["max_abs"] <= 0.04


def test_regression_guard():
    for recs in (validate_multi_gpu_rows(ROWS), validate_multi_gpu_rows(VAL)):
        d = summarize(recs, "err_device_used")
        t = summarize(recs, "err_tokens_per_second")
        assert d["median_abs"] <= 0.02 and d["max_abs"] <= 0.06 and d["worst_under"] >= -0.05, d
        assert t["median_abs"] <= 0.08, t
    t_val = summarize(validate_multi_gpu_rows(VAL), "err_tokens_per_second")
    assert t_val["max_abs"] <= 0.30, t_val


@pytest.mark.xfail(strict=True, reason="tokens/s: i-003 +25 % (Llama-3.2-3B full fine-tuning, 1024 tokens per step "
                   "on 4 GPUs, launch-bound, a slow machine: blind repeat m-000 +2 %); docs/multi-gpu.md")
def test_issue_7_goal_on_every_multi_gpu_run():
    recs = validate_multi_gpu_rows(ROWS)
    assert summarize(recs, "err_device_used")["max_abs"] <= 0.06
    assert summarize(recs, "err_tokens_per_second")["max_abs"] <= 0.15
