"""Tests of the caching-allocator simulator (ftcalc.model.allocsim.allocator) and the generated training sequence."""

from __future__ import annotations

import glob
import gzip
import json

import pytest

from ftcalc.model.allocsim.allocator import (
    K_LARGE_BUFFER,
    K_SMALL_BUFFER,
    CachingAllocator,
    OutOfMemory,
    allocation_size,
    replay_trace,
    round_size,
    simulate,
)

MiB = 1 << 20


def test_round_size_and_pools():
    assert round_size(1) == 512
    assert round_size(512) == 512
    assert round_size(513) == 1024
    assert allocation_size(round_size(4)) == K_SMALL_BUFFER  # small pool: 2 MiB segments
    assert allocation_size(MiB) == K_SMALL_BUFFER  # 1 MiB is still small
    assert allocation_size(MiB + 512) == K_LARGE_BUFFER  # 1-10 MiB: 20 MiB segment
    assert allocation_size(10 * MiB - 512) == K_LARGE_BUFFER
    assert allocation_size(10 * MiB) == 10 * MiB  # >= 10 MiB: rounded to 2 MiB
    assert allocation_size(11 * MiB) == 12 * MiB


def test_small_requests_share_a_2mib_segment():
    a = CachingAllocator()
    p = [a.malloc(1000) for _ in range(4)]
    assert a.reserved == K_SMALL_BUFFER and a.allocated == 4 * 1024
    assert p == sorted(p)  # split from the low end of the free block
    a.malloc(MiB)  # 1 MiB still fits in the rest of the segment
    assert a.reserved == K_SMALL_BUFFER


def test_large_split_threshold():
    a = CachingAllocator()
    x = a.malloc(2 * MiB)  # 20 MiB segment, split: remainder 18 MiB > 1 MiB
    assert a.reserved == 20 * MiB and a.allocated == 2 * MiB
    a.free(x)
    y = a.malloc(19 * MiB + 512)  # remainder 1 MiB - 512 B <= kSmallSize: not split, whole block handed out
    assert a.reserved == 20 * MiB and a.allocated == 20 * MiB
    a.free(y)
    assert a.allocated == 0


def test_best_fit_smallest_block_then_lowest_address():
    a = CachingAllocator(address_order="up")
    big = a.malloc(40 * MiB)
    a.malloc(12 * MiB)
    small = a.malloc(16 * MiB)
    a.malloc(12 * MiB)
    a.free(big)
    a.free(small)
    got = a.malloc(14 * MiB)  # best fit: the 16 MiB block, not the 40 MiB one
    assert got == small
    assert a.reserved == 80 * MiB


def test_merge_within_segment_only():
    a = CachingAllocator(address_order="up")
    s1 = a.malloc(30 * MiB)
    s2 = a.malloc(30 * MiB)  # adjacent addresses, but another segment
    a.free(s1)
    a.free(s2)
    a.malloc(50 * MiB)  # cannot use the two 30 MiB cached segments together
    assert a.reserved == 110 * MiB
    b = CachingAllocator()
    seg = b.malloc(60 * MiB)
    b.free(seg)
    parts = [b.malloc(20 * MiB) for _ in range(3)]  # one 60 MiB segment split in three
    assert b.reserved == 60 * MiB
    b.free(parts[0])
    b.free(parts[2])
    b.free(parts[1])  # merges with both neighbours
    assert b.largest_free() == 60 * MiB
    b.malloc(60 * MiB)
    assert b.reserved == 60 * MiB


def test_fragmentation_grows_reserved():
    # a freed 40 MiB hole split by a long-lived 12 MiB tensor cannot take a 30 MiB request
    r = simulate([("alloc", "a", 40 * MiB), ("free", "a", 0), ("alloc", "keep", 12 * MiB),
                  ("alloc", "b", 30 * MiB)])
    assert r.peak_allocated == 42 * MiB
    assert r.peak_reserved == 70 * MiB
    assert r.gap_at_peaks == 28 * MiB


def test_capacity_releases_cache_then_oom():
    a = CachingAllocator(capacity=64 * MiB)
    x = a.malloc(40 * MiB)
    a.free(x)
    a.malloc(50 * MiB)  # needs cudaMalloc: fails, frees the cached 40 MiB segment, retries
    assert a.reserved == 50 * MiB and a.num_segment_frees == 1
    with pytest.raises(OutOfMemory):
        a.malloc(20 * MiB)


TRACES = sorted(glob.glob("data/traces/t-*.json.gz"))


@pytest.mark.skipif(not TRACES, reason="no recorded traces")
@pytest.mark.parametrize("path", TRACES[:3])
def test_replay_matches_recorded_trace(path):
    with gzip.open(path, "rt") as f:
        tr = json.load(f)
    r = replay_trace(tr, use_recorded_addresses=True)
    assert r.peak_reserved == r.recorded_peak_reserved
    assert r.peak_allocated == r.recorded_peak_allocated
    assert r.segment_size_mismatches == 0 and r.address_mismatches == 0
    assert all(sim == rec for _, sim, rec in r.reserved_at_marks)
    r2 = replay_trace(tr)  # synthetic addresses (new segments placed downwards): same reservation
    assert abs(r2.reserved_error) < 0.005


def test_generated_sequence_gap():
    from ftcalc.model.allocsim.sequence import simulate_training
    from ftcalc.model.options import make_options
    from ftcalc.tables.catalog import resolve_model

    opts = make_options(method="full", seq_len=1024, batch_size=4, gradient_checkpointing=False,
                        optimizer="adamw_torch", precision="bf16-true")
    sim = simulate_training(resolve_model("meta-llama/Llama-3.2-1B"), opts)
    # t-c004: measured peak allocated 19.54 GiB, gap 0.36 GiB
    assert abs(sim.peak_allocated / 2**30 - 19.54) < 0.2
    assert abs(sim.gap / 2**30 - 0.36) < 0.15


def _qwen3_opts():
    from ftcalc.model.options import make_options

    # t-qwen3 / g1-002: Qwen2.5-3B (tied embeddings), checkpointing, bf16-true, adamw_torch (foreach)
    return make_options(method="full", seq_len=1024, batch_size=4, gradient_checkpointing=True,
                        optimizer="adamw_torch", precision="bf16-true")


def test_tied_build_frees_the_lm_head_copy():
    from ftcalc.model.allocsim.sequence import step_sequence
    from ftcalc.tables.catalog import resolve_model

    opts = _qwen3_opts()
    req = step_sequence(resolve_model("Qwen/Qwen2.5-3B"), opts, steps=1)
    reset = req.index(("reset", 0, 0))
    (op1, id1, nbytes), (op2, id2, _) = req[reset - 2:reset]
    assert (op1, op2, id1, nbytes) == ("alloc", "free", id2, 151936 * 2048 * 2)  # V x h bf16, freed
    untied = step_sequence(resolve_model("meta-llama/Meta-Llama-3-8B"), opts, steps=1)
    assert untied[untied.index(("reset", 0, 0)) - 1][0] == "alloc"  # the untied lm_head is kept


def test_checkpointed_layer_backward_accumulates_residual_in_place():
    from ftcalc.model.allocsim.sequence import _decoder_layer_bwd, _layer_fwd, _Seq, dims_for
    from ftcalc.tables.catalog import resolve_model

    d = dims_for(resolve_model("Qwen/Qwen2.5-3B"), _qwen3_opts())
    s = _Seq()
    x, dy = s.a(d.n * d.h * 2), s.a(d.n * d.h * 2)
    _, sv = _layer_fwd(s, d, x, keep=True, stop_early=True)
    s.f(sv.pop("h1"))
    start = len(s.req)
    dx = _decoder_layer_bwd(s, d, 0, dy, sv, {}, frame=x)
    body = s.req[start:]
    assert dx == dy and ("free", dy, 0) not in body  # both residual adds accumulate into dy
    assert ("free", x, 0) in body  # the layer input dies with the checkpoint frame
    nh = [r for r in body if r[0] == "alloc" and r[2] == d.n * d.h * 2]
    assert len(nh) == 20  # q_dim == h here: 20 allocations of N x h bf16, as in t-qwen3 events 16698-16947


def test_generated_sequence_reproduces_the_pinned_logits_segment():
    from ftcalc.model.allocsim.allocator import allocation_size, round_size, simulate
    from ftcalc.model.allocsim.sequence import simulate_training, step_sequence
    from ftcalc.tables.catalog import resolve_model

    spec, opts = resolve_model("Qwen/Qwen2.5-3B"), _qwen3_opts()
    r = simulate(step_sequence(spec, opts, steps=2))
    logits_segment = allocation_size(round_size(4096 * 151936 * 2))
    # step 0's logits segment keeps layer 0's q exp_avg / exp_avg_sq (the recomputed input-norm output's
    # 16 MiB slot), so step 1's logits take a second one, as on the device (t-qwen3)
    assert [size for _, size in r.allocator.segment_log].count(logits_segment) == 2
    sim = simulate_training(spec, opts)
    assert abs(sim.gap / 2**30 - 8.69) < 0.3  # measured 8.69 GiB (g1-002, b-015)


def _a015_opts():
    from ftcalc.model.options import make_options

    # t-a015 / a-015: Llama-3.2-1B (tied), checkpointing, bf16-mixed (fp32 weights under bf16 autocast)
    return make_options(method="full", seq_len=1024, batch_size=8, gradient_checkpointing=True,
                        optimizer="adamw_torch", precision="bf16-mixed")


def test_autocast_layer_forward_casts_each_input_and_caches_weight_casts():
    from dataclasses import replace

    from ftcalc.model.allocsim.sequence import _mixed_layer_fwd, _Seq, dims_for
    from ftcalc.tables.catalog import resolve_model

    d = replace(dims_for(resolve_model("meta-llama/Llama-3.2-1B"), _a015_opts()), n=1000, b=1, t=1000)
    s, cache = _Seq(), {}
    out, sv = _mixed_layer_fwd(s, d, 0, cache, save=False)
    allocs = {i: nbytes for op, i, nbytes in s.req if op == "alloc"}
    freed = {i for op, i, _ in s.req if op == "free"}
    order = [i for op, i, _ in s.req if op == "alloc"]
    for name in ("q", "k", "v", "gate", "up"):  # weight cast, then the fp32 input's own bf16 cast (not a
        xc = order[order.index(cache[f"0.{name}"]) + 1]  # leaf: not cached), freed unsaved, then the output
        assert allocs[xc] == d.n * d.h * 2 and xc in freed
    # the seven weight casts stay in autocast's cache (freed only when autocast exits, after the loss)
    assert len(cache) == 7 and not freed & set(cache.values())
    # after v (cast, input cast, output) the rotary's q * cos is fp32: cos / sin follow the fp32 hidden states
    assert allocs[order[order.index(cache["0.v"]) + 3]] == d.n * d.q_dim * 4
    assert allocs[out] == d.n * d.h * 4 and sv == {}


def test_generated_bf16_mixed_sequence_matches_a015_trace():
    from ftcalc.model.allocsim.sequence import simulate_training
    from ftcalc.tables.catalog import resolve_model

    sim = simulate_training(resolve_model("meta-llama/Llama-3.2-1B"), _a015_opts())
    path = "data/traces/t-a015.json.gz"
    with gzip.open(path, "rt") as f:
        tr = json.load(f)
    measured_gap = (tr["peak_reserved_bytes"] - tr["peak_allocated_bytes"]) / 2**30  # 7.59 GiB
    assert abs(sim.gap / 2**30 - measured_gap) < 0.3  # the coarser, untraced layer structure gave 9.56
    assert abs(sim.peak_allocated - tr["peak_allocated_bytes"]) / 2**30 < 0.1


# ---------------------------------------------------------------------------------------------------------
# Multi-stream allocator and FSDP (rank 0's FSDP2 trace t-fsdp8). Separate block: the
# generated-sequence tests above are edited elsewhere.


def test_free_blocks_serve_only_their_own_stream():
    a = CachingAllocator()
    x = a.malloc(40 * MiB, stream=1)
    a.free(x)
    a.malloc(30 * MiB, stream=0)  # the cached 40 MiB block belongs to stream 1: a new segment
    assert a.reserved == 70 * MiB
    a.malloc(30 * MiB, stream=1)  # stream 1 reuses its own block
    assert a.reserved == 70 * MiB and a.reserved_by_stream() == {1: 40 * MiB, 0: 30 * MiB}
    s = a.malloc(1000, stream=1)  # small pool per stream too
    a.free(s)
    a.malloc(1000, stream=0)
    assert a.reserved == 70 * MiB + 2 * K_SMALL_BUFFER


def test_replay_fsdp_trace_with_streams():
    path = "data/traces/fsdp/t-fsdp8.json.gz"
    with gzip.open(path, "rt") as f:
        tr = json.load(f)
    assert tr["num_gpus"] == 4 and tr["distribution"] == "fsdp" and len(tr["trace"]) > 50_000
    r = replay_trace(tr, use_recorded_addresses=True)
    assert len(r.streams) == 3
    assert r.peak_reserved == r.recorded_peak_reserved  # 28.06 GiB, to the byte
    assert r.peak_allocated == r.recorded_peak_allocated
    assert r.segment_size_mismatches == 0 and r.address_mismatches == 0
    # the reserved peak: step 1's third 2004 MiB loss segment on the compute stream, with the all-gather
    # stream holding 2.37 GiB and the reduce-scatter stream 3.80 GiB (the gradient shards' segments)
    by = sorted(r.reserved_by_stream_at_peak.values())
    assert [round(v / 2**30, 2) for v in by] == [2.37, 3.8, 21.89]
    assert abs(replay_trace(tr).reserved_error) < 0.001  # synthetic addresses


def test_fsdp_collective_pools_of_the_trace():
    from ftcalc.model.allocsim.fsdp import collective_pool_bytes

    layer = 218_112_000 * 2  # Llama-3-8B decoder layer, bf16
    embed = 128_256 * 4096 * 2
    tail = embed + 4096 * 2
    ag, rs = collective_pool_bytes(embed, layer, tail, 32, 4, embed, layer, tail)
    assert ag == (1002 + 418 + 1004) * MiB  # t-fsdp8's three all-gather segments
    assert rs == (32 * 106 + 2 * 252) * MiB  # its 34 reduce-scatter segments


def test_simulated_fsdp_rank_matches_measured_gap():
    from ftcalc.model.allocsim.fsdp import simulate_fsdp
    from ftcalc.model.options import make_options
    from ftcalc.tables.catalog import resolve_model

    opts = make_options(method="full", seq_len=4096, batch_size=2, gradient_checkpointing=True,
                        optimizer="adamw_torch", precision="bf16-true")
    sim = simulate_fsdp(resolve_model("meta-llama/Meta-Llama-3-8B"), opts, 2)
    # e-005 (2 x H200, rank 0): peak allocated 37.48 GiB, reserved - allocated 16.13 GiB
    assert abs(sim.peak_allocated / 2**30 - 37.48) < 0.2
    assert abs(sim.gap / 2**30 - 16.13) < 0.5


def _random_requests(seed: int, n: int = 3000) -> list[tuple]:
    import random

    rng = random.Random(seed)
    live: list[int] = []
    req: list[tuple] = []
    sizes = [1, 511, 512, 4000, 1 << 20, (1 << 20) + 1, 3 << 20, 9 << 20, 10 << 20, 25 << 20, 130 << 20]
    for i in range(n):
        if live and rng.random() < 0.45:
            req.append(("free", live.pop(rng.randrange(len(live))), 0))
        elif rng.random() < 0.01:
            req.append(("reset", 0, 0))
        else:
            size = rng.choice(sizes) + rng.randrange(0, 1 << 16) * rng.randrange(0, 2)
            req.append(("alloc", i, size, rng.choice((0, 0, 1, 2))))
            live.append(i)
    return req


@pytest.mark.parametrize("seed", range(6))
def test_simulate_peaks_equals_the_allocator_on_random_sequences(seed):
    from ftcalc.model.allocsim.allocator import simulate_peaks

    req = _random_requests(seed)
    r = simulate(req, CachingAllocator())
    assert simulate_peaks(req) == (r.peak_reserved, r.peak_allocated, r.allocator.reserved_by_stream())


@pytest.mark.parametrize("model, method, n", [("llama3.2-1b", "full", 1), ("8b", "full", 4), ("8b", "lora", 2),
                                              ("8b", "qlora", 4)])
def test_simulate_peaks_equals_the_allocator_on_planner_sequences(model, method, n):
    from ftcalc.model.allocsim.adapter import adapter_fsdp_step_sequence
    from ftcalc.model.allocsim.allocator import simulate_peaks
    from ftcalc.model.allocsim.fsdp import fsdp_step_sequence
    from ftcalc.model.allocsim.sequence import step_sequence
    from ftcalc.model.options import make_options
    from ftcalc.tables.catalog import resolve_model

    spec = resolve_model(model)
    opts = make_options(method=method, seq_len=1024, batch_size=2)
    if method == "qlora":
        opts = opts.model_copy(update={"qlora_fp32_upcast": False})
    if n == 1:
        req = step_sequence(spec, opts, 2, ddp=True)
    elif method == "full":
        req = fsdp_step_sequence(spec, opts, n, 2, True)
    else:
        req = adapter_fsdp_step_sequence(spec, opts, n, 2, True)
    r = simulate(req, CachingAllocator())
    assert simulate_peaks(req) == (r.peak_reserved, r.peak_allocated, r.allocator.reserved_by_stream())
