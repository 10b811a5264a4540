#!/usr/bin/env bash
# Sixth session, nvidia-h200-x2 (carry .site): rank 0's caching-allocator traces of sharded QLoRA (plan r's
# r-000 and r-002 configurations, 3 steps): where the predicted reserved exceeds the measured one.
#   bash scripts/gpu_call_trace6.sh COMMIT
set -u
export PYTHONPATH=$PWD/.site:$PWD FTCALC_GIT_COMMIT=$1 PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 \
  TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/tr6
timeout 400 python3 -m ftcalc.profile --batch scripts/plans/trace6.jsonl --out "$out/trace6.jsonl" --timeout 190 2>&1 | grep "^\["
cp /tmp/tr6/*.json.gz "$out"/; ls -la "$out"
