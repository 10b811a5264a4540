#!/usr/bin/env bash
# The third-session device call on nvidia-h200-x4 (carry .site): DDP bucket all-reduce bandwidth on 2 and 4
# GPUs, rank-0 allocator traces of DDP and FSDP (trace3), plan i (blind: predictions in data/predictions/i.json),
# and the Qwen2.5-3B one-GPU trace (trace4) on GPU 3 beside the one-GPU rows of plan i on GPU 0.
#   bash scripts/gpu_call_i.sh COMMIT
set -u
C=$1
export PYTHONPATH=$PWD/.site:$PWD FTCALC_GIT_COMMIT=$C PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 \
  TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
out=${OUT:-/tmp/out}; mkdir -p "$out" /tmp/tr3 /tmp/tr4
for n in 2 4; do
  timeout 120 python3 -m torch.distributed.run --standalone --nproc-per-node=$n scripts/nccl_bench.py --out "$out/nccl.jsonl" 2>&1 | grep -v -i warn | tail -3
done
python3 -m ftcalc.profile --batch scripts/plans/trace3.jsonl --out /tmp/tr3/rows.jsonl --timeout 200 2>&1 | grep "^\[" 
python3 -m ftcalc.profile --batch scripts/plans/i.jsonl --only multi --out "$out/i.jsonl" --timeout 200 2>&1 | grep "^\["
(CUDA_VISIBLE_DEVICES=3 python3 scripts/alloc_trace.py --batch scripts/plans/trace4.jsonl --out /tmp/tr4 > /tmp/tr4/log.txt 2>&1) &
tp=$!
CUDA_VISIBLE_DEVICES=0 python3 -m ftcalc.profile --batch scripts/plans/i.jsonl --only single --out "$out/i.jsonl" --timeout 200 2>&1 | grep "^\["
wait $tp
cat /tmp/tr4/log.txt
cp /tmp/tr3/rows.jsonl "$out/trace3_rows.jsonl" 2>/dev/null
tar cf "$out/traces.tar" -C /tmp tr3 tr4
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/env.txt"
ls -la "$out"
