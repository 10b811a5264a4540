"""The plan solver (ftcalc/solver/search.py, ftcalc/model/sharding.py) and `ftcalc recommend` (ftcalc/cli/recommend.py)."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ftcalc.cli.recommend import add_recommend_parser, main, parse_hours, parse_tokens, parse_usd
from ftcalc.errors import DataFileError, DoesNotFitError, FtcalcError, InvalidArgumentError, UnknownGPUError
from ftcalc.model import sharding as sh
from ftcalc.model.memory import estimate_memory, load_coefficients
from ftcalc.model.options import make_options
from ftcalc.model.throughput import StepParts
from ftcalc.solver import search as solver
from ftcalc.solver.search import recommend
from ftcalc.tables.catalog import resolve_model
from ftcalc.tables.hardware import get_gpu
from ftcalc.tables.inventory import inventory
from ftcalc.tables.pricing import REQUIRED_COLUMNS, cheapest_instances, load_prices

ROOT = Path(__file__).resolve().parents[2]
GIB = 2**30


def _states(model: str, methods=("full", "lora", "qlora"), seq_len: int = 2048):
    spec = resolve_model(model)
    base = make_options(method="lora", seq_len=seq_len)
    return spec, *solver.config_grid(spec, base, methods, solver.MICRO_BATCH_SIZES, 16)


# ------------------------------------------------------------------------------------------ sharding


def test_single_gpu_without_accumulation_is_estimate_memory():
    spec, opts_list, states = _states("8b")
    inv, c = inventory(spec.arch), load_coefficients()
    for i, opts in enumerate(opts_list):
        # what `ftcalc estimate` predicts: the allocator simulation for full fine-tuning
        want = estimate_memory(spec.arch, inv, opts, c, fragmentation="simulated").device_used_bytes
        got = sh.device_used_per_gpu(states.take(i), sh.SINGLE, 1, 1, 0.5 * GIB)
        assert got == pytest.approx(want, rel=1e-9), (opts.method, opts.batch_size, opts.checkpointing)


def test_ddp_adds_gradient_buckets_and_nccl_buffers():
    _, opts_list, states = _states("8b", methods=("full",))
    i = next(k for k, o in enumerate(opts_list) if o.batch_size == 1 and o.checkpointing)
    st = states.take(i)
    single = sh.device_used_per_gpu(st, sh.SINGLE, 1, 1, 0.5 * GIB)
    ddp = sh.device_used_per_gpu(st, sh.DDP, 2, 1, 0.5 * GIB)
    # DDP runs the one-GPU allocation sequence plus the buckets: the same fragmentation as one GPU
    assert ddp - single == pytest.approx(st.grads + 0.5 * GIB, rel=0.02)


def test_fsdp_shrinks_with_gpus_and_gathers_layers():
    _, opts_list, states = _states("70b", methods=("full",))
    i = next(k for k, o in enumerate(opts_list) if o.batch_size == 1 and o.checkpointing)
    st = states.take(i)
    used = [sh.device_used_per_gpu(st, sh.FSDP, n, 1, 0.5 * GIB) for n in (2, 4, 8, 16)]
    assert used == sorted(used, reverse=True)
    # model states (weights + grads + AdamW states + step temporaries, ~10 bytes/param) over N, plus more
    model_states = st.weights + st.grads + st.opt_states + st.step_tmp
    assert used[2] > model_states / 8 + 2 * st.layer_bytes * 7 / 8
    # offload leaves only gathered units and activations on the GPU
    off = sh.device_used_per_gpu(st, sh.FSDP_OFFLOAD, 8, 1, 0.5 * GIB)
    assert off < used[3] < used[2]


def test_gradient_accumulation_keeps_gradients_alive():
    _, opts_list, states = _states("8b", methods=("full",))
    i = next(k for k, o in enumerate(opts_list) if o.batch_size == 1 and not o.checkpointing)
    st = states.take(i)
    one = sh.device_used_per_gpu(st, sh.SINGLE, 1, 1, 0.5 * GIB)
    four = sh.device_used_per_gpu(st, sh.SINGLE, 1, 4, 0.5 * GIB)
    assert four > one


def _times(gpu_s, cpu_s=0.0, opt_s=0.1, power=4.0):
    return StepParts(gpu_s=gpu_s, cpu_s=cpu_s, optimizer_s=opt_s, power=power)


def test_communication_exposes_only_what_compute_cannot_hide():
    a = sh.load_assumptions()
    bw = sh.comm_bandwidth_bytes_per_s(900, 0.8, True, 1, a)
    assert bw == pytest.approx(360e9)
    # DDP's bucket all-reduce does not hide behind compute (measured): all of it is exposed, at the bucket
    # share of the link rate; LoRA gradients are tiny, so it stays under 1% of the step
    step, compute = sh.step_seconds_parallel(_times(1.0), sh.DDP, 8, 4, 141e9, 0.17e9, 42e6, 1, bw, a)
    allreduce = 2 * 7 / 8 * 0.17e9 / (bw * a.ddp_bucket_share["4"])
    assert a.ddp_comm_overlap == 0.0
    assert step == pytest.approx(compute + allreduce) and step < 1.01 * compute
    step2, _ = sh.step_seconds_parallel(_times(1.0), sh.DDP, 2, 4, 141e9, 0.17e9, 42e6, 1, bw, a)
    assert step2 - compute == pytest.approx(2 * 1 / 2 * 0.17e9 / (bw * a.ddp_bucket_share["2"]))
    # full FSDP of 70B on PCIe: communication dominates
    pcie = sh.comm_bandwidth_bytes_per_s(64, 0.6, True, 1, a)
    step, compute = sh.step_seconds_parallel(_times(1.0), sh.FSDP, 8, 4, 141e9, 141e9, 70e9, 1, pcie, a)
    assert step > 2 * compute


def test_ddp_all_reduce_is_exposed_once_per_optimizer_step():
    """The all-reduce runs after the last micro-batch only (no_sync before), and is not hidden behind a
    launch-bound backward either."""
    a = sh.load_assumptions()
    bw = sh.comm_bandwidth_bytes_per_s(900, 0.8, True, 1, a)
    grads = 6.4e9  # Llama-3.2-3B bf16 gradients
    comm = 2 * 1 / 2 * grads / (bw * a.ddp_bucket_share["2"])
    launch_bound = _times(0.05, cpu_s=0.2)
    step, compute = sh.step_seconds_parallel(launch_bound, sh.DDP, 2, 1, 6.4e9, grads, 3.2e9, 1, bw, a)
    assert compute == pytest.approx(launch_bound.micro_batch_s + 0.1)
    assert step - compute == pytest.approx(comm)
    step4, compute4 = sh.step_seconds_parallel(launch_bound, sh.DDP, 2, 4, 6.4e9, grads, 3.2e9, 1, bw, a)
    assert compute4 == pytest.approx(4 * launch_bound.micro_batch_s + 0.1)
    assert step4 - compute4 == pytest.approx(comm)


def test_hidden_fsdp_collectives_slow_the_compute_they_hide_behind():
    """FSDP's all-gathers and reduce-scatters hide behind the micro-batch up to comm_overlap of it, but their
    NCCL kernels hold SMs meanwhile: comm_contention of the hidden time is added (70B full FSDP on 8xH200 ran
    18 % slower than the model without it, h-000)."""
    a = sh.load_assumptions()
    bw = sh.comm_bandwidth_bytes_per_s(900, 0.8, True, 1, a)
    n, gather, grads = 8, 141e9, 141e9
    comm = 7 / 8 * (2 * gather + grads) / bw  # 1.03 s
    units = 82
    latency = 3 * units * a.fsdp_collective_latency_s
    for gpu_s in (2.0, 0.5):  # comm hidden in full (2 s of compute), or only up to comm_overlap of 0.5 s
        t = _times(gpu_s)
        step, compute = sh.step_seconds_parallel(t, sh.FSDP, n, 1, gather, grads, 70e9, 1, bw, a, units=units)
        hidden = min(comm, a.comm_overlap * t.micro_batch_s)
        exposed = comm - hidden
        assert step - compute == pytest.approx(exposed + a.comm_contention * hidden + latency)
    assert 0.1 < a.comm_contention < 0.3  # 24 of 132 SMs (data/solver_assumptions.json)


def test_fsdp_forward_all_gathers_hide_only_behind_the_forward():
    """FSDP's collectives hide behind their own phase's compute: the forward's all-gathers behind the first forward
    (a third of a checkpointed LoRA micro-batch), the backward's behind the rest. A LoRA step whose total traffic
    the whole micro-batch could hide still exposes what its forward cannot (h-002, 405B LoRA on 8 GPUs, went from
    +10.6 to +4.6 % with this alone)."""
    a = sh.load_assumptions()
    bw = sh.comm_bandwidth_bytes_per_s(900, 0.8, True, 1, a)
    n, gather = 8, 810e9  # 405B in bf16, frozen: LoRA's gradients are tiny
    ring = 7 / 8
    comm_fwd = ring * gather / bw  # 1.97 s
    gpu_s = 5.5
    lora = StepParts(gpu_s=gpu_s, cpu_s=0.0, optimizer_s=0.0, power=4.0, forward_share=1 / 3)
    step, compute = sh.step_seconds_parallel(lora, sh.FSDP, n, 1, gather, 0.0, 1e9, 1, bw, a)
    hide_fwd, hide_bwd = a.comm_overlap * gpu_s / 3, a.comm_overlap * gpu_s * 2 / 3
    assert 2 * comm_fwd < a.comm_overlap * gpu_s  # the old, whole-step overlap hid all of it
    exposed = comm_fwd - hide_fwd
    assert exposed > 0.0 and comm_fwd < hide_bwd  # the backward's re-gather still hides
    assert step - compute == pytest.approx(exposed + a.comm_contention * (hide_fwd + comm_fwd))


def test_fsdp_all_gather_copy_out_runs_on_the_compute_stream():
    """FSDP2 copies each all-gather's output into the parameters on the compute stream
    (FSDPParamGroup.wait_for_unshard): a read and a write of the gathered bytes per all-gather, in series."""
    a = sh.load_assumptions()
    bw = sh.comm_bandwidth_bytes_per_s(900, 0.8, True, 1, a)
    gather, hbm = 141e9, 4.8e12
    for sharding, gathers in ((sh.FSDP, 2), (sh.FSDP_GRAD_OP, 1)):
        without, _ = sh.step_seconds_parallel(_times(3.0), sharding, 8, 1, gather, 141e9, 70e9, 1, bw, a)
        with_copy, _ = sh.step_seconds_parallel(_times(3.0), sharding, 8, 1, gather, 141e9, 70e9, 1, bw, a,
                                                memory_bandwidth_bytes_per_s=hbm)
        assert with_copy - without == pytest.approx(gathers * 2 * gather / hbm)
    ddp, _ = sh.step_seconds_parallel(_times(3.0), sh.DDP, 8, 1, gather, 141e9, 70e9, 1, bw, a,
                                      memory_bandwidth_bytes_per_s=hbm)
    assert ddp == sh.step_seconds_parallel(_times(3.0), sh.DDP, 8, 1, gather, 141e9, 70e9, 1, bw, a)[0]


def test_sharded_qlora_keeps_the_quantization_state_whole_on_every_rank():
    """Sharded QLoRA (FSDP): FSDP2 shards the 4-bit rows, the bf16 embeddings, head and adapters, but every rank
    keeps the whole quantization state (ftcalc.train.recipe._fill_linear4bit_shards). Going from 4 to 8 GPUs halves
    the sharded states only; CPU offload of 4-bit weights is refused (the recipe does not run it)."""
    from ftcalc.errors import InvalidArgumentError
    from ftcalc.model.memory import weights_bytes
    from ftcalc.model.parallel import estimate_parallel
    from ftcalc.solver.search import config_grid
    from ftcalc.tables.inventory import inventory

    spec = resolve_model("meta-llama/Llama-3.1-405B")
    opts = make_options(method="qlora", seq_len=1024, qlora_fp32_upcast=False)
    w = weights_bytes(inventory(spec.arch), opts)
    assert 5e9 < w["quant_state"] < 8e9  # ~1/64 byte per 4-bit parameter with double quantization (405B: ~6.4 GB)
    _, st = config_grid(spec, opts, ["qlora"], [1], 1, checkpointing=(True,))
    one = st.take(np.array([0]))
    states = one.weights + one.adapters + one.opt_states
    a4 = float(sh.allocated_per_gpu(one, np.array([sh.FSDP]), np.array([4.0]), np.array([1]))[0])
    a8 = float(sh.allocated_per_gpu(one, np.array([sh.FSDP]), np.array([8.0]), np.array([1]))[0])
    assert a4 - a8 == pytest.approx(float((states - one.quant_state)[0]) * (1 / 4 - 1 / 8), rel=1e-6)
    with pytest.raises(InvalidArgumentError, match="fsdp_offload with qlora"):
        estimate_parallel("meta-llama/Meta-Llama-3-70B", make_options(method="qlora"), "h200", "fsdp_offload", 2)


def test_sharded_qlora_fits_70b_where_a_qlora_replica_does_not():
    """70B QLoRA on two 48 GB GPUs: a DDP replica does not fit, sharded QLoRA does; and its bf16 states make it
    smaller per GPU than DDP's fp32-upcast replica on 2 H200s too."""
    from ftcalc.model.parallel import default_strategy, estimate_parallel

    opts = make_options(method="qlora", seq_len=2048)
    ddp = estimate_parallel("meta-llama/Meta-Llama-3-70B", opts, "l40s", "ddp", 2)
    fsdp = estimate_parallel("meta-llama/Meta-Llama-3-70B", opts, "l40s", "fsdp", 2)
    assert ddp.device_used_bytes > 48e9 > fsdp.device_used_bytes
    assert default_strategy("meta-llama/Meta-Llama-3-70B", opts, "l40s", 2) == "fsdp"
    assert default_strategy("meta-llama/Meta-Llama-3-8B", opts, "l40s", 2) == "ddp"


def test_host_bound_steps_carry_the_host_note():
    """A step whose forward + backward the host's launches bound gets HOST_BOUND_NOTE (its speed varied up to
    38 % between machines); a GPU-bound one does not."""
    from ftcalc.model.estimator import estimate
    from ftcalc.model.throughput import HOST_BOUND_NOTE

    small = estimate("meta-llama/Llama-3.2-3B", method="full", seq_len=1024, batch_size=1, gpu="h200")
    big = estimate("meta-llama/Llama-3.2-3B", method="full", seq_len=2048, batch_size=4, gpu="h200")
    assert small.host_bound and small.host_launch_ratio > 1
    assert not big.host_bound and big.host_launch_ratio < 1
    par = estimate("meta-llama/Llama-3.2-3B", method="full", seq_len=1024, batch_size=1, gpu="h200", num_gpus=4)
    assert par.host_bound
    rec = recommend("meta-llama/Llama-3.2-1B", method="full", dataset_tokens=1_000_000, seq_len=128,
                    gpu="h100", max_gpus=1, global_batch_size=1, micro_batch_sizes=(1,))
    assert HOST_BOUND_NOTE in rec.plans[0].notes


# ------------------------------------------------------------------------------------------ recommend


def test_plans_are_ranked_by_the_objective():
    by_cost = recommend("8b", method="lora", dataset_tokens=50_000_000, top=8)
    costs = [p.est_cost_usd for p in by_cost.plans]
    assert costs == sorted(costs) and len(by_cost.plans) == 8
    by_time = recommend("8b", method="lora", dataset_tokens=50_000_000, top=8, objective="time")
    hours = [p.est_hours for p in by_time.plans]
    assert hours == sorted(hours)
    assert by_time.plans[0].est_hours < by_cost.plans[0].est_hours
    assert by_time.plans[0].est_cost_usd >= by_cost.plans[0].est_cost_usd
    assert [p.rank for p in by_cost.plans] == list(range(1, 9))


def test_qlora_plans_are_the_ones_the_recipe_runs():
    """QLoRA runs on one GPU, under DDP (peft's fp32 upcast) or sharded under FSDP full-shard (bf16, not
    upcast); never with CPU offload, which the recipe refuses for 4-bit weights. 70B QLoRA does not fit one
    48 GB L40S: sharded over two it does, and the plan's figures are the sharded ones."""
    rec = recommend("70b", method="qlora", dataset_tokens=50_000_000, top=20)
    assert rec.plans and {p.sharding for p in rec.plans} <= {"single", "ddp", "fsdp"}
    rec = recommend("70b", method="qlora", dataset_tokens=10_000_000, gpu="l40s", max_gpus=8, top=20)
    assert rec.plans and {p.sharding for p in rec.plans} == {"fsdp"} and min(p.num_gpus for p in rec.plans) == 2
    p = rec.plans[0]
    opts = make_options(method="qlora", seq_len=2048, batch_size=p.micro_batch_size,
                        gradient_accumulation_steps=p.grad_accum, gradient_checkpointing=p.gradient_checkpointing)
    from ftcalc.model.parallel import estimate_parallel

    e = estimate_parallel("70b", opts, "l40s", "fsdp", p.num_gpus)
    assert p.device_used_bytes == pytest.approx(e.device_used_bytes, rel=1e-6)


def test_70b_qlora_fits_one_h100_and_full_70b_does_not():
    rec = recommend("70b", method="qlora", dataset_tokens=10_000_000, gpu="h100", max_gpus=1)
    p = rec.plans[0]
    assert (p.gpu, p.num_gpus, p.sharding, p.method) == ("h100-sxm", 1, "single", "qlora")
    assert p.device_used_bytes <= 0.95 * get_gpu("h100").memory_bytes
    # measured: runs a-024 and c-021 (70B QLoRA on an H100, batch 1, seq 1024-2048) used 51-55 GiB
    assert 45 * GIB < p.device_used_bytes < 80 * GIB
    with pytest.raises(DoesNotFitError, match=r"h100-sxm x1: needs \d+\.\d GB per GPU, has 85\.0 GB"):
        recommend("70b", method="full", dataset_tokens=10_000_000, gpu="h100", max_gpus=1, provider="runpod")
    # one H100 of a rented 8-GPU node: only with CPU offload into the node's host RAM
    rec = recommend("70b", method="full", dataset_tokens=10_000_000, gpu="h100", max_gpus=1)
    assert {(p.sharding, p.gpus_paid) for p in rec.plans} == {("fsdp_offload", 8)}


def test_full_70b_on_h100s_is_rejected_with_its_memory_need():
    rec = recommend("70b", method="full", dataset_tokens=10_000_000, gpu=["h100", "h200"])
    assert all(p.gpu == "h200" and p.num_gpus == 8 for p in rec.plans)
    reasons = " | ".join(r.reason for r in rec.rejected)
    assert "h100-sxm x8: needs" in reasons


def test_aws_p5_pays_for_8_gpus_when_2_are_needed():
    rec = recommend("8b", method="full", dataset_tokens=10_000_000, gpu="h100", provider="aws", max_gpus=2)
    p = rec.plans[0]
    assert (p.instance_type, p.num_gpus, p.gpus_paid, p.num_instances) == ("p5.48xlarge", 2, 8, 1)
    assert p.usd_per_hour == pytest.approx(55.04)
    assert p.est_cost_usd == pytest.approx(55.04 * max(p.est_hours, 60 / 3600), abs=0.02)  # per second, 60 s min
    assert "pays for 8 GPUs, trains on 2" in p.notes
    assert any(r.gpu == "h100-sxm" and r.num_gpus == 1 for r in rec.rejected)  # 1x p5.4xlarge: too small


def test_deadline_no_plan_meets_names_the_fastest_and_a_deadline_that_works():
    with pytest.raises(DoesNotFitError, match=r"within the 1 h deadline.*takes .*--deadline (\d+)h") as e:
        recommend("70b", method="qlora", dataset_tokens=200_000_000, deadline_hours=1)
    suggested = int(str(e.value).split("--deadline ")[1].split("h")[0])
    rec = recommend("70b", method="qlora", dataset_tokens=200_000_000, deadline_hours=suggested)
    assert rec.plans[0].est_hours <= suggested


def test_budget_too_small_names_the_cheapest_and_a_budget_that_works():
    with pytest.raises(DoesNotFitError, match=r"no plan costs \$5\.00 or less.*--budget (\d+)") as e:
        recommend("70b", method="qlora", dataset_tokens=100_000_000, budget_usd=5)
    suggested = int(str(e.value).split("--budget ")[1].split(",")[0])
    rec = recommend("70b", method="qlora", dataset_tokens=100_000_000, budget_usd=suggested)
    assert rec.plans[0].est_cost_usd <= suggested


def test_deadline_and_budget_together():
    fast = recommend("70b", method="qlora", dataset_tokens=100_000_000, objective="time").plans[0]
    cheap = recommend("70b", method="qlora", dataset_tokens=100_000_000).plans[0]
    assert fast.est_hours < cheap.est_hours and fast.est_cost_usd > cheap.est_cost_usd
    with pytest.raises(DoesNotFitError, match="deadline"):
        recommend("70b", method="qlora", dataset_tokens=100_000_000, deadline_hours=fast.est_hours * 1.01,
                  budget_usd=cheap.est_cost_usd * 1.001)
    ok = recommend("70b", method="qlora", dataset_tokens=100_000_000, deadline_hours=cheap.est_hours * 1.01,
                   budget_usd=cheap.est_cost_usd * 1.01)
    assert ok.plans[0].est_cost_usd <= cheap.est_cost_usd * 1.01


def test_model_no_gpu_holds_even_sharded():
    with pytest.raises(DoesNotFitError, match=r"fits no allowed GPU.*--max-gpus \d+.*--method lora or qlora"):
        recommend("405b", method="full", dataset_tokens=10_000_000)


def test_cpu_offload_is_the_last_resort():
    # 70B full fine-tuning on 24 GB cards: only with CPU offload (at 1024 tokens; at 2048 the gathered units,
    # FSDP's collective buffers and the activations exceed 24 GB even then)
    rec = recommend("70b", method="full", dataset_tokens=1_000_000, gpu="rtx-4090", seq_len=1024)
    assert rec.plans and all(p.sharding == "fsdp_offload" for p in rec.plans)
    assert any("host RAM" in n for n in rec.plans[0].notes)
    rec = recommend("70b", method="full", dataset_tokens=1_000_000, top=20)
    assert all(p.sharding != "fsdp_offload" for p in rec.plans)


def test_bad_inputs_are_reported_together():
    with pytest.raises(InvalidArgumentError) as e:
        recommend("8b", method="qlra", dataset_tokens=-5, objective="speed", top=0)
    msg = str(e.value)
    for part in ("method='qlra'", "objective='speed'", "top=0", "dataset_tokens=-5"):
        assert part in msg
    with pytest.raises(InvalidArgumentError, match="--dataset-tokens"):
        recommend("8b", budget_usd=100)  # a budget means nothing without the dataset size
    with pytest.raises(InvalidArgumentError, match="--avg-tokens"):
        recommend("8b", examples=1000)
    with pytest.raises(UnknownGPUError, match="h1000"):
        recommend("8b", dataset_tokens=1_000_000, gpu="h1000")
    with pytest.raises(solver.UnknownProviderError, match="awz.*aws"):
        recommend("8b", dataset_tokens=1_000_000, provider="awz")
    with pytest.raises(InvalidArgumentError, match="no on-demand price for l40s at aws"):
        recommend("8b", dataset_tokens=1_000_000, provider="aws", gpu="l40s")


def test_examples_times_average_tokens_packed_and_truncated():
    rec = recommend("8b", examples=10_000, avg_tokens=512, top=1)
    assert rec.dataset_tokens == 5_120_000
    rec = recommend("8b", examples=1_000, avg_tokens=9_000, seq_len=2048, top=1)
    assert rec.dataset_tokens == 2_048_000


def test_global_batch_is_reached_with_gradient_accumulation():
    rec = recommend("8b", method="lora", dataset_tokens=10_000_000, top=10)
    for p in rec.plans:
        assert p.micro_batch_size * p.num_gpus * p.grad_accum == p.global_batch_size == 16
        assert p.optimizer_steps == math.ceil(10_000_000 / (16 * 2048))
    rec = recommend("8b", method="lora", dataset_tokens=10_000_000, top=3, global_batch_tokens=65_536)
    assert rec.global_batch_size == 32 and all(p.global_batch_size == 32 for p in rec.plans)


def test_method_auto_considers_all_three():
    rec = recommend("70b", method="auto", dataset_tokens=10_000_000, gpu="h100", max_gpus=1)
    assert rec.plans[0].method == "qlora"  # the only one that fits one H100
    assert any("objective only" in n for n in rec.notes)


def test_prices_file_replaces_the_table(tmp_path):
    path = tmp_path / "prices.csv"
    header = ",".join(REQUIRED_COLUMNS)
    row = "myco,box-1,h100,1,1.00,,1,,eu,test,2026-11-22,"
    path.write_text(header + "\n" + row + "\n")
    rec = recommend("8b", method="lora", dataset_tokens=10_000_000, prices=path)
    assert {(p.provider, p.instance_type) for p in rec.plans} == {("myco", "box-1")}
    bad = tmp_path / "bad.csv"
    bad.write_text(header + "\nmyco,box-1,h100,1,cheap,,1,,eu,test,2026-11-22,\n")
    with pytest.raises(DataFileError, match="on_demand_usd_per_hour"):
        recommend("8b", method="lora", dataset_tokens=10_000_000, prices=bad)


# ------------------------------------------------------------------------------------------ brute force


def _brute_force(model, methods, gpus, providers, max_gpus, tokens, seq_len=2048, target=16, headroom=0.05):
    """The search as a plain loop over every candidate, using pricing.cheapest_instances and
    InstanceChoice.cost_usd for the money (the vectorized path has its own billing code)."""
    from ftcalc.model.parallel import simulated_fsdp_gap_bytes
    from ftcalc.model.throughput import load_throughput, step_parts

    spec = resolve_model(model)
    base = make_options(method="lora", seq_len=seq_len)
    opts_list, states = solver.config_grid(spec, base, methods, solver.MICRO_BATCH_SIZES, target, sharded_qlora=True)
    a = sh.load_assumptions()
    tc = load_throughput()
    start_s = sh.startup_seconds(2.0 * inventory(spec.arch).total_params, a)
    cands = []
    for name in gpus:
        g = get_gpu(name)
        for n in solver._gpu_counts(max_gpus):
            for ch in cheapest_instances(g, n, providers=providers):
                for i, opts in enumerate(opts_list):
                    mb = opts.batch_size
                    if mb * n > target and mb != 1:
                        continue
                    ga = max(1, math.ceil(target / (mb * n)))
                    st = states.take(i)
                    times = step_parts(spec, opts, g, tc)
                    for s in ((sh.SINGLE, sh.FSDP_OFFLOAD) if n == 1 else (sh.DDP, sh.FSDP, sh.FSDP_OFFLOAD)):
                        # peft's QLoRA (fp32 upcast) on one GPU or under DDP, sharded QLoRA under FSDP only
                        if (opts.fp32_upcast and s in (sh.FSDP, sh.FSDP_OFFLOAD)) or (opts.sharded_qlora and s != sh.FSDP):
                            continue
                        gap = simulated_fsdp_gap_bytes(spec, opts, n) if s == sh.FSDP and ga == 1 else None
                        st_s = replace(st, gap_fsdp=np.array(np.nan if gap is None else gap))
                        used = sh.device_used_per_gpu(st_s, s, n, ga, a.nccl_buffer_bytes)
                        fits = used <= g.memory_bytes * (1 - headroom)
                        if s == sh.FSDP_OFFLOAD:
                            fits &= sh.host_bytes_offload(st) <= 0.9 * a.host_memory_bytes_per_gpu * ch.gpus_paid
                        bw = sh.comm_bandwidth_bytes_per_s(g.interconnect_gbps, a.link_efficiency[g.interconnect],
                                                           g.p2p, ch.num_instances, a)
                        step, _ = sh.step_seconds_parallel(times, s, n, ga,
                                                           st.gathered_weights, st.grads,
                                                           st.trainable_params, ch.num_instances, bw, a,
                                                           units=st.units, untie=st.untie_trainable(s),
                                                           memory_bandwidth_bytes_per_s=g.memory_bandwidth_gbps * 1e9)
                        steps = math.ceil(tokens / (mb * n * ga * seq_len))
                        train = steps * step
                        resume = (st.weights if st.full else st.adapters) + st.opt_states + st.opt_paged
                        runtime = start_s + train + sh.checkpoint_seconds(train, resume, ch.num_instances, a)
                        cands.append(dict(offer=(ch.provider, ch.instance_type, n), method=opts.method, mb=mb,
                                          ga=ga, ckpt=opts.checkpointing, sharding=sh.SHARDINGS[s], si=s,
                                          used=float(used), fits=bool(fits), hours=runtime / 3600,
                                          cost=ch.cost_usd(runtime)))
    if any(c["fits"] and c["sharding"] != "fsdp_offload" for c in cands):
        cands = [c for c in cands if c["sharding"] != "fsdp_offload"]
    by_offer: dict = {}
    for c in (c for c in cands if c["fits"]):
        by_offer.setdefault(c["offer"], []).append(c)
    chosen = []
    for group in by_offer.values():
        best = min(c["cost"] for c in group)
        near = [c for c in group if c["cost"] <= best * (1 + solver.SIMPLER_WITHIN)]
        chosen.append(min(near, key=lambda c: (c["si"], c["cost"], c["hours"], c["used"])))
    return sorted(chosen, key=lambda c: (c["cost"], c["hours"], c["si"], c["used"]))


def test_vectorized_search_equals_a_brute_force_loop():
    kw = dict(model="8b", gpus=["h100", "a100-80gb-sxm"], providers=["runpod", "lambda", "aws"], max_gpus=4)
    want = _brute_force(methods=("full", "lora", "qlora"), tokens=20_000_000, **kw)
    rec = recommend(kw["model"], method="auto", dataset_tokens=20_000_000, gpu=kw["gpus"], provider=kw["providers"],
                    max_gpus=kw["max_gpus"], top=100)
    assert len(rec.plans) == len(want) > 10
    for p, w in zip(rec.plans, want, strict=True):
        assert ((p.provider, p.instance_type, p.num_gpus), p.method, p.micro_batch_size, p.grad_accum,
                p.gradient_checkpointing, p.sharding) == (w["offer"], w["method"], w["mb"], w["ga"], w["ckpt"],
                                                          w["sharding"])
        assert p.est_cost_usd == pytest.approx(w["cost"], abs=0.006)
        assert p.est_hours == pytest.approx(w["hours"], rel=1e-9)
        assert p.device_used_bytes == pytest.approx(w["used"], abs=1)


def test_vectorized_billing_equals_pricing():
    from ftcalc.tables.pricing import billed_cost_usd

    runtime = np.array([0.0, 1.0, 59.0, 61.0, 3599.5, 7200.0])
    for gran, minimum in ((1, 60), (60, 60), (3600, 0), (0, 0)):
        got = solver._billed_cost(np.full(6, 4.29), runtime, np.full(6, float(gran)), np.full(6, float(minimum)))
        want = [billed_cost_usd(4.29, r, gran or None, minimum or None) for r in runtime]
        assert got == pytest.approx(want)


# ------------------------------------------------------------------------------------------ the CLI


def _cli(capsys, *argv):
    code = main(["recommend", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_json_contract(capsys):
    code, out, _ = _cli(capsys, "--model", "70b", "--method", "qlora", "--dataset-tokens", "100M", "--json")
    assert code == 0
    d = json.loads(out)
    assert set(d) >= {"plans", "rejected"}
    assert d["plans"]
    for p in d["plans"]:
        for key in ("gpu", "num_gpus", "provider", "instance_type", "method", "micro_batch_size", "grad_accum",
                    "gradient_checkpointing", "sharding", "device_used_bytes", "gpu_memory_bytes",
                    "tokens_per_second", "est_hours", "est_cost_usd"):
            assert key in p, key
        assert isinstance(p["device_used_bytes"], int) and p["device_used_bytes"] < p["gpu_memory_bytes"]
    for r in d["rejected"]:
        assert r["reason"] and r["gpu"]


def test_table_is_readable_at_80_columns(capsys):
    code, out, _ = _cli(capsys, "--model", "8b", "--method", "auto", "--examples", "20000", "--avg-tokens", "600",
                        "--gpu", "h100,a100", "--provider", "aws", "--provider", "lambda", "--top", "8")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "GiB" in out and "GB" in out and "cost USD" in out and "hours" in out


@pytest.mark.parametrize("argv, text", [
    (["--model", "8b", "--dataset-tokens", "1M", "--gpu", "h1000"], "unknown GPU 'h1000'"),
    (["--model", "8b", "--dataset-tokens", "1M", "--provider", "nope"], "unknown provider 'nope'"),
    (["--model", "70b", "--method", "full", "--dataset-tokens", "1M", "--gpu", "h100", "--max-gpus", "1",
      "--provider", "runpod"],
     "h100-sxm x1: needs"),
    (["--model", "70b", "--method", "qlora", "--dataset-tokens", "1B", "--deadline", "1h"], "deadline"),
    (["--model", "70b", "--method", "qlora", "--dataset-tokens", "1B", "--budget", "1"], "budget"),
    (["--model", "8b", "--examples", "1000"], "dataset size is missing"),
    (["--model", "8b", "--deadline", "8h"], "needs the dataset size"),
])
def test_errors_exit_2_with_one_line(capsys, argv, text):
    code, out, err = _cli(capsys, *argv)
    assert code == 2 and out == ""
    assert text in err and err.startswith("ftcalc: error: ") and err.count("\n") == 1


def test_usage_errors_exit_2(capsys):
    code, _, err = _cli(capsys, "--model", "8b", "--dataset-tokens", "1M", "--deadline", "soon")
    assert code == 2 and "not a duration" in err


def test_prices_flag_with_a_bad_file_exits_2(capsys, tmp_path):
    bad = tmp_path / "p.csv"
    bad.write_text("provider,gpu\nx,h100\n")
    code, _, err = _cli(capsys, "--model", "8b", "--dataset-tokens", "1M", "--prices", str(bad))
    assert code == 2 and "missing column" in err


def test_add_recommend_parser_sets_func():
    parser = argparse.ArgumentParser()
    add_recommend_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["recommend", "--model", "8b", "--dataset-tokens", "2.5B", "--deadline", "90m",
                              "--budget", "$1,500"])
    assert args.func.__name__ == "cmd_recommend"
    assert (args.dataset_tokens, args.deadline, args.budget) == (2_500_000_000, 1.5, 1500.0)


def test_unit_parsers():
    assert parse_tokens("100M") == 100_000_000 and parse_tokens("50k") == 50_000
    assert parse_hours("2d") == 48 and parse_hours("8") == 8 and parse_hours("45min") == 0.75
    assert parse_usd("100usd") == 100
    for fn, bad in ((parse_tokens, "lots"), (parse_hours, "-1h"), (parse_usd, "0")):
        with pytest.raises(argparse.ArgumentTypeError):
            fn(bad)


def test_the_planner_never_imports_torch():
    code = ("import sys; from ftcalc.cli.recommend import main; "
            "main(['recommend', '--model', '8b', '--dataset-tokens', '1M', '--json']); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_shipped_prices_all_take_part():
    # every priced GPU of the shipped table yields at least one offer for a small model
    rec = recommend("meta-llama/Llama-3.2-1B", method="qlora", dataset_tokens=1_000_000, top=500)
    priced = {r.gpu for r in load_prices() if r.on_demand_usd_per_hour is not None}
    assert {p.gpu for p in rec.plans} == priced


def test_errors_are_ftcalc_errors():
    assert issubclass(solver.UnknownProviderError, FtcalcError)


def test_shard_grad_op_sits_between_full_shard_and_ddp():
    """FSDP2 reshard_after_forward=False keeps every unit gathered between its forward and backward: more memory
    than full-shard, less than a DDP replica; one all-gather per micro-batch instead of two."""
    from ftcalc.model.parallel import estimate_parallel

    opts = make_options(method="full", seq_len=2048, batch_size=2, gradient_checkpointing=True)
    e = {s: estimate_parallel("8b", opts, "h200", s, 4) for s in ("fsdp", "fsdp_grad_op", "ddp")}
    assert e["fsdp"].peak_allocated_bytes < e["fsdp_grad_op"].peak_allocated_bytes < e["ddp"].peak_allocated_bytes
    assert e["fsdp_grad_op"].step_seconds < e["fsdp"].step_seconds
    rec = recommend("8b", method="full", dataset_tokens=10_000_000, gpu="h200", top=20)
    assert all(p.sharding != "fsdp_grad_op" for p in rec.plans)  # not measured yet: never recommended


def test_without_a_dataset_size_plans_are_ranked_per_million_tokens():
    rec = recommend("8b", method="lora", top=6)
    assert rec.dataset_tokens is None and solver.DATASET_HINT in rec.notes
    rates = [p.usd_per_million_tokens for p in rec.plans]
    assert rates == sorted(rates)
    for p in rec.plans:
        assert p.est_hours is None and p.est_cost_usd is None and p.optimizer_steps is None
        # price per hour over trained tokens per hour, independently of the solver's arrays
        assert p.usd_per_million_tokens == pytest.approx(p.usd_per_hour / (p.tokens_per_second * 3600) * 1e6,
                                                         abs=1e-4)
    fast = recommend("8b", method="lora", top=6, objective="time")
    speeds = [p.tokens_per_second for p in fast.plans]
    assert speeds == sorted(speeds, reverse=True)
    assert fast.plans[0].tokens_per_second > rec.plans[0].tokens_per_second
    # with a dataset size the same field is there, and the ranking is by billed cost
    sized = recommend("8b", method="lora", dataset_tokens=50_000_000, top=6)
    assert all(p.usd_per_million_tokens > 0 and p.est_cost_usd is not None for p in sized.plans)
