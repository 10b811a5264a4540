"""Judge the rows of the GPU smoke plan (lab/plans/smoke.jsonl, scripts/gpu_smoke.sh) before spending device
time on a costly plan: every line must have run, and each wrapping must have put its parameters where it should.

    python scripts/check_smoke.py ROWS.jsonl      # exit 0: all good; 1: one line per problem

FSDP without CPU offload must hold its shards on the GPU after the build (plan h's first attempt on 8xH200
built them in host memory: ``allocated_after_load_bytes`` was 1 KiB on every rank and the first backward
failed); with offload the shards stay on the host.
"""

from __future__ import annotations

import json
import sys
from typing import Any

ON_GPU_MIN_BYTES = 1 << 20  # the tiny config's shard on each of 2 GPUs is ~4 MB in bf16
OFFLOADED_MAX_BYTES = 1 << 20  # under offload only the rotary buffers are on the GPU


def problems(rows: list[dict[str, Any]]) -> list[str]:
    """What is wrong with each row, one line each (empty when the smoke passed)."""
    out = []
    for r in rows:
        rid = r.get("run_id") or "?"
        what = f"{rid} ({r.get('method')}, {r.get('num_gpus') or 1}x {r.get('distribution') or 'single'})"
        if r.get("outcome") != "ok":
            out.append(f"{what}: {r.get('outcome')}: {(r.get('error') or '')[:200]}")
            continue
        if r.get("distribution") != "fsdp":
            continue
        ranks = r.get("per_rank") or [r]
        loads = [x.get("allocated_after_load_bytes") or 0 for x in ranks]
        if r.get("offload_params"):
            if max(loads) > OFFLOADED_MAX_BYTES:
                out.append(f"{what}: CPU offload left {max(loads)} bytes on a GPU after the build")
        elif min(loads) < ON_GPU_MIN_BYTES:
            out.append(f"{what}: the shards are not on the GPU after the build ({min(loads)} bytes allocated)")
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: check_smoke.py ROWS.jsonl", file=sys.stderr)
        return 2
    rows = [json.loads(line) for line in open(args[0]) if line.strip()]
    found = problems(rows)
    for p in found:
        print(p)
    print(f"smoke: {len(rows)} rows, {'all good' if not found else f'{len(found)} problem(s)'}")
    return 1 if found or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
