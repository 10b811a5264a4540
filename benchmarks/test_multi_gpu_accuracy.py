"""Multi-GPU accuracy on the 2x, 4x and 8xH200 runs, and the time one multi-GPU estimate takes.

Goal: per-GPU device memory within 6 % of measured on every multi-GPU run, tokens/s within 15 %. Met for
device memory on every run (DDP: the simulated allocation sequence of a rank; FSDP: the simulated three-stream
sequence of a rank, ftcalc/model/allocsim/fsdp.py for full fine-tuning and
ftcalc/model/allocsim/adapter.py for LoRA and sharded QLoRA, which took r-000 from +8.3 to -2.2 % and u-002
from +7.8 to +2.8 %). Met for tokens/s on every run the model calls GPU-bound (sharded QLoRA's plans r, s, u
included since the adapter path is counted; plan r was -23 to -29 % as registered) but one: x-003
(blind, LoRA on q_proj and v_proj only) -20.8 %.
Not met on host-bound runs: Llama-3.2-3B full fine-tuning at 1024 tokens per GPU under DDP, whose step took
0.225-0.310 s on four GPUs of three machines (i-003 +25 %, p-000 +41 %) and 0.226-0.285 s on two (q-000 +16 %,
r-005 +34 %): the host's launch speed, which varied within minutes on one machine (docs/notes/time-model.md;
ftcalc.model.throughput.HOST_BOUND_NOTE); and u-002 (sharded QLoRA of Mistral-7B, -15.5 %), which the model calls
host-bound and predicts slow. So the full goal is a strict xfail and guards hold today's errors
(docs/multi-gpu.md has the tables).
"""

from __future__ import annotations

import pytest

from ftcalc.measure.calibrate import (
    is_multi_gpu_validation,
    load_measurements,
    summarize,
    validate_multi_gpu_rows,
)
from ftcalc.model.options import make_options
from ftcalc.model.parallel import estimate_parallel

ROWS = load_measurements(multi_gpu=True)
VAL = [r for r in ROWS if is_multi_gpu_validation(r)]
# sharded QLoRA (FSDP, plan r: its first runs, blind)
SHARDED_QLORA = {r["run_id"] for r in ROWS if r["method"] == "qlora" and r.get("distribution") == "fsdp"}


def test_one_parallel_estimate_time(benchmark):
    opts = make_options(method="lora", seq_len=4096, batch_size=1)
    e = benchmark(estimate_parallel, "llama-3-70b", opts, "h200", "fsdp", 2)
    assert e.device_used_bytes < 141e9


def test_allocated_per_gpu_on_every_multi_gpu_run():
    offload = {r["run_id"] for r in ROWS if r.get("offload_params")}
    big = {r["run_id"] for r in ROWS if r["model"] == "meta-llama/Llama-3.1-405B"}
    recs = validate_multi_gpu_rows(ROWS)
    assert len(recs) >= 53
    a = summarize([r for r in recs if r["run_id"] not in offload | big | SHARDED_QLORA], "err_peak_allocated")
    assert a["max_abs"] <= 0.03, a  # the sharding mechanism alone: no fitted term
    # with CPU offload (plan n): n-002 (Llama-3-8B LoRA) +3.7 %, not explained yet (docs/multi-gpu.md)
    assert summarize([r for r in recs if r["run_id"] in offload], "err_peak_allocated")["max_abs"] <= 0.04
    # Llama-3.1-405B LoRA on 8 GPUs (h-002, h-003): -4.8 and -3.7 %, about one gathered decoder layer (5.9 GiB)
    # short at 1024 tokens, not explained yet (no trace); device used is over (+2.4, +3.5 %)
    b = summarize([r for r in recs if r["run_id"] in big], "err_peak_allocated")
    assert b["n"] == 2 and b["max_abs"] <= 0.05, b
    # sharded QLoRA (plans r, s and u, blind): -3.8 % (r-000) to +3.6 % (u-002)
    q = summarize([r for r in recs if r["run_id"] in SHARDED_QLORA], "err_peak_allocated")
    assert q["n"] >= 11 and q["max_abs"] <= 0.04, q


def test_regression_guard():
    for recs in (validate_multi_gpu_rows(ROWS), validate_multi_gpu_rows(VAL)):
        d = summarize(recs, "err_device_used")
        t = summarize(recs, "err_tokens_per_second")
        assert d["median_abs"] <= 0.02 and d["worst_under"] >= -0.05, d
        # blind runs: 8.8 % since plans q and r (host-bound repeats, sharded QLoRA); all runs: 5.5 %
        assert t["median_abs"] <= 0.09, t
        # LoRA and sharded QLoRA under FSDP: the simulated adapter sequence, -4.2 to +2.2 % on their 21 runs
        # (sharded QLoRA was +0.9 to +8.3 % with the one-GPU fit of the compute stream's gap); the worst are the
        # runs whose peak allocated is under-predicted (h-002, 405B LoRA: allocated -4.8 %, used -4.2 %)
        a = summarize([r for r in recs if r["method"] in ("lora", "qlora") and r["distribution"] == "fsdp"],
                      "err_device_used")
        assert a["max_abs"] <= 0.045, a


def test_device_used_goal_on_every_multi_gpu_run():
    recs = validate_multi_gpu_rows(ROWS)
    assert len(recs) >= 59
    assert summarize(recs, "err_device_used")["max_abs"] <= 0.06


def test_tokens_per_second_goal_on_every_gpu_bound_run():
    recs = validate_multi_gpu_rows(ROWS)
    gpu_bound = [r for r in recs if not r["host_bound"]]
    assert len(gpu_bound) >= 53
    # x-003 (Llama-3-8B LoRA r=64 on q_proj and v_proj only, blind: -20.8 %) is within 15 % since the time model
    # counts both sides of the adapter path in bytes (ftcalc.model.throughput.adapter_path_bytes) and FSDP's forward
    # all-gathers and copy-out by phase: x-003 -5.1 %, 405B LoRA (h-002, h-003) +4.6 / +7.3 %. Then, blind (plan z):
    # z-004 (Llama-3-8B sharded QLoRA on q_proj and v_proj, 4096 tokens, 2 GPUs) +22.4 % at a host-launch ratio of
    # 0.93, steps spread 0.62-1.12 s; its blind repeat on another machine (sq-000) -7.6 % (time-model.md)
    assert summarize([r for r in gpu_bound if r["run_id"] != "z-004"], "err_tokens_per_second")["max_abs"] <= 0.15
    assert summarize(gpu_bound, "err_tokens_per_second")["max_abs"] <= 0.23
    # sharded QLoRA, host-bound ones included: -11.2 % (u-002, host-bound) to +22.4 % (z-004) with the adapter
    # path in bytes; registered blind: plan r -23 to -29 %, plans s and u -19.8 to +4.0 %, plan z +22.4 %
    q = summarize([r for r in recs if r["run_id"] in SHARDED_QLORA], "err_tokens_per_second")
    assert q["n"] >= 11 and q["max_abs"] <= 0.23, q


@pytest.mark.xfail(strict=True, reason="tokens/s on host-bound runs (i-003 +25 %, p-000 +41 %, q-000 +16 %, r-005 +34 %: "
                   "Llama-3.2-3B full fine-tuning, 1024 tokens per GPU, DDP, whose step time follows the host's speed; "
                   "s-001 +16 %, sharded QLoRA at a host-launch ratio of 1.07); GPU-bound: z-004 +22 % (sharded QLoRA on "
                   "q_proj and v_proj, blind); docs/multi-gpu.md")
def test_multi_gpu_goal_on_every_run():
    recs = validate_multi_gpu_rows(ROWS)
    assert summarize(recs, "err_device_used")["max_abs"] <= 0.06
    assert summarize(recs, "err_tokens_per_second")["max_abs"] <= 0.15
