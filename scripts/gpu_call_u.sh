#!/usr/bin/env bash
# Sixth session, nvidia-h200-x2 (carry .site): plan u, blind (data/predictions/u.json): sharded QLoRA on 2 GPUs
# (tied Llama-3.2-3B, 8B without checkpointing, Mistral-7B), after the untie fix for sharded QLoRA.
#   bash scripts/gpu_call_u.sh COMMIT
set -u
export PYTHONPATH=$PWD/.site:$PWD FTCALC_GIT_COMMIT=$1 PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 \
  TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
out=${OUT:-/tmp/out}; mkdir -p "$out"
(lscpu | head -20; nproc; free -g; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv) > "$out/host.txt" 2>&1
timeout 420 python3 -m ftcalc.profile --batch scripts/plans/u.jsonl --out "$out/u.jsonl" --timeout 200 2>&1 | grep "^\["
