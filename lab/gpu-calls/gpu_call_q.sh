#!/usr/bin/env bash
# Sixth-session first call on nvidia-h200-x2 (carry .site): the smoke plan (every launch path, sharded QLoRA's
# first GPU run), the host experiment (scripts/host_exp.py: launch-bound step under GC off / pinning, and a
# tiny-width skeleton of the same model as a host probe), then plan q (i-003's configuration on 2 GPUs and
# its one-GPU twin, predictions registered first: data/predictions/q.json).
#   bash scripts/gpu_call_q.sh COMMIT
set -u
export PYTHONPATH=$PWD/.site:$PWD FTCALC_GIT_COMMIT=$1 PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 \
  TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
out=${OUT:-/tmp/out}; mkdir -p "$out"
(lscpu; nproc; free -g; cat /proc/loadavg; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv;
 nvidia-smi topo -m) > "$out/host.txt" 2>&1
timeout 240 python3 -m ftcalc.profile --batch scripts/plans/smoke.jsonl --out "$out/smoke.jsonl" --timeout 100 2>&1 | grep "^\["
python3 scripts/check_smoke.py "$out/smoke.jsonl"
CUDA_VISIBLE_DEVICES=0 timeout 150 python3 scripts/host_exp.py "$out/host_3b.json" meta-llama/Llama-3.2-3B 1024 2>&1 | grep -v Warn
timeout 150 python3 -m ftcalc.profile --batch scripts/plans/q.jsonl --out "$out/q.jsonl" --timeout 140 2>&1 | grep "^\["
