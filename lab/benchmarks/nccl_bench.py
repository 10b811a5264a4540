"""All-reduce bandwidth as DDP uses it: gradient buckets of 25 MB all-reduced back to back (issue 7's DDP time).

    torchrun --standalone --nproc-per-node=N lab/benchmarks/nccl_bench.py --out results.jsonl [--total-gb 16]

Measured on each run, rank 0 appends one JSON line:
- ``bucket_busbw``: ``--total-gb`` of bf16 gradients in DDP's bucket sizes (first bucket 1 MB, then 25 MB,
  torch DDP's defaults) all-reduced in order, asynchronously, as the reducer launches them; NCCL's bus
  bandwidth 2(N-1)/N x bytes / seconds.
- ``large_busbw``: the same bytes as 1 GiB all-reduces (the link's large-message rate).
- ``overlap``: the buckets all-reduced while the compute stream runs bf16 matmuls of about the same
  duration: seconds of both together against each alone (how much of the all-reduce hides behind compute
  and how much compute slows down).
Timings: host wall clock between ``torch.cuda.synchronize()`` calls after a barrier, median of ``--repeats``
after one warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def main() -> None:
    import torch
    import torch.distributed as dist

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--total-gb", type=float, default=16.0)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    local = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    n = dist.get_world_size()
    total = int(a.total_gb * 1e9) // 2  # bf16 elements
    from ftcalc.model.allocsim.sequence import DDP_BUCKET_CAP, DDP_FIRST_BUCKET_CAP

    sizes, left, cap = [], total, DDP_FIRST_BUCKET_CAP // 2
    while left > 0:
        sizes.append(min(cap, left))
        left -= sizes[-1]
        cap = DDP_BUCKET_CAP // 2
    buckets = [torch.ones(s, dtype=torch.bfloat16, device="cuda") for s in sizes]
    big = [torch.ones(min(1 << 29, total - i), dtype=torch.bfloat16, device="cuda") for i in range(0, total, 1 << 29)]
    x = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
    comm = torch.cuda.Stream()

    def timed(fn) -> float:
        out = []
        for k in range(a.repeats + 1):
            dist.barrier()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            if k:
                out.append(time.perf_counter() - t0)
        return statistics.median(out)

    def allreduce(ts):
        hs = [dist.all_reduce(t, async_op=True) for t in ts]
        for h in hs:
            h.wait()

    def matmuls(k):
        for _ in range(k):
            torch.mm(x, x)

    t_b = timed(lambda: allreduce(buckets))
    t_l = timed(lambda: allreduce(big))
    t_mm1 = timed(lambda: matmuls(10))
    k = max(1, int(10 * t_b / t_mm1))
    t_mm = timed(lambda: matmuls(k))

    def both():
        comm.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(comm):
            hs = [dist.all_reduce(t, async_op=True) for t in buckets]
        matmuls(k)
        for h in hs:
            h.wait()
        torch.cuda.current_stream().wait_stream(comm)

    t_both = timed(both)
    nbytes = total * 2
    ring = 2 * (n - 1) / n
    if dist.get_rank() == 0:
        row = {"num_gpus": n, "gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
               "nccl": ".".join(map(str, torch.cuda.nccl.version())), "bytes": nbytes, "buckets": len(buckets),
               "bucket_seconds": t_b, "bucket_busbw_gbps": ring * nbytes / t_b / 1e9,
               "large_seconds": t_l, "large_busbw_gbps": ring * nbytes / t_l / 1e9,
               "matmul_seconds": t_mm, "matmuls": k, "both_seconds": t_both,
               "exposed_beyond_matmul_seconds": t_both - t_mm, "env_nvls": os.environ.get("NCCL_NVLS_ENABLE")}
        print(json.dumps(row), flush=True)
        with open(a.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
