#!/usr/bin/env bash
# Fourth-session blind call on nvidia-h200-x4 (carry .site): plan m, predictions registered first in
# data/predictions/m.json. Multi-GPU lines first (torchrun), then the one-GPU lines on GPU 0 with the other
# GPUs idle (no concurrent process: the launch-bound steps are sensitive to the host CPU).
#   bash scripts/gpu_call_m.sh COMMIT
set -u
C=$1
export PYTHONPATH=$PWD/.site:$PWD FTCALC_GIT_COMMIT=$C PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 \
  TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
out=${OUT:-/tmp/out}; mkdir -p "$out"
(lscpu | head -20; nproc; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv) > "$out/host.txt" 2>&1
python3 -m ftcalc.profile --batch scripts/plans/m.jsonl --only multi --out "$out/m.jsonl" --timeout 200 2>&1 | grep "^\["
CUDA_VISIBLE_DEVICES=0 python3 -m ftcalc.profile --batch scripts/plans/m.jsonl --only single --out "$out/m.jsonl" --timeout 200 2>&1 | grep "^\["
