#!/usr/bin/env bash
# Sixth session, nvidia-h200-x4 (carry .site): plan s, blind (data/predictions/s.json): sharded QLoRA on 4 GPUs
# (70B, 8B, and Qwen2.5-7B, a model no sharded-QLoRA run had), with the model after plan r.
#   bash scripts/gpu_call_s.sh COMMIT
set -u
export PYTHONPATH=$PWD/.site:$PWD FTCALC_GIT_COMMIT=$1 PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 \
  TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
out=${OUT:-/tmp/out}; mkdir -p "$out"
(lscpu | head -20; nproc; free -g; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv) > "$out/host.txt" 2>&1
timeout 420 python3 -m ftcalc.profile --batch scripts/plans/s.jsonl --out "$out/s.jsonl" --timeout 200 2>&1 | grep "^\["
