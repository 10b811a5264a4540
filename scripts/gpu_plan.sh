#!/usr/bin/env bash
# One profiling plan on a GPU machine of enough GPUs (carry .site), after its predictions were registered
# (scripts/register_predictions.py PLAN): the host's lscpu, then every line of lab/plans/PLAN.jsonl, one
# process (torchrun for several GPUs) per line. Plans s (nvidia-h200-x4: sharded QLoRA
# on 4 GPUs) and u (nvidia-h200-x2: sharded QLoRA of a tied model, without checkpointing, Mistral-7B) ran with it.
#   bash scripts/gpu_plan.sh PLAN COMMIT
set -u
plan=$1
export PYTHONPATH=$PWD/.site:$PWD FTCALC_GIT_COMMIT=$2 PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 \
  TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
out=${OUT:-/tmp/out}; mkdir -p "$out"
(lscpu | head -20; nproc; free -g; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv) > "$out/host.txt" 2>&1
timeout "${PLAN_TIMEOUT:-420}" python3 -m ftcalc.measure.profile --batch "lab/plans/$plan.jsonl" --out "$out/$plan.jsonl" --timeout 200 2>&1 | grep "^\["
