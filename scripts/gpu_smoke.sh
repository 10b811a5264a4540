#!/usr/bin/env bash
# First call on a fresh GPU machine of 2 GPUs or more (carry .site), before a costly plan: every launch path of
# the recipe (one GPU full and QLoRA; FSDP full-shard, shard-grad-op, CPU offload, LoRA; DDP LoRA and QLoRA) on
# the tiny config, about two minutes; scripts/check_smoke.py judges the rows.
#   bash scripts/gpu_smoke.sh COMMIT
set -u
export PYTHONPATH=$PWD/.site:$PWD FTCALC_GIT_COMMIT=$1 PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 \
  TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
out=${OUT:-/tmp/out}; mkdir -p "$out"
python3 -m ftcalc.measure.profile --batch lab/plans/smoke.jsonl --out "$out/smoke.jsonl" --timeout 120 2>&1 | grep "^\["
python3 scripts/check_smoke.py "$out/smoke.jsonl"
