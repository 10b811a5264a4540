#!/usr/bin/env bash
# Fourth-session one-GPU device call (carry .site): the host's launch speed and the two phases of small steps
# (plan k on nvidia-h100-x1, plan l, the same lines, on nvidia-h200), and on the H100 the allocator traces of
# plan trace5 (Llama-3.2-1B full fine-tuning with SGD at 128 and 4096 tokens, frames of allocations >= 64 MiB).
#   bash scripts/gpu_call_kl.sh COMMIT PLAN [trace]
set -u
C=$1; P=$2
export PYTHONPATH=$PWD/.site:$PWD FTCALC_GIT_COMMIT=$C PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}; mkdir -p "$out"
(lscpu | head -20; nproc; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv) > "$out/host.txt" 2>&1
python3 -m ftcalc.profile --batch "scripts/plans/$P.jsonl" --out "$out/$P.jsonl" --timeout 240 2>&1 | grep "^\["
if [ "${3:-}" = trace ]; then
  mkdir -p /tmp/tr5
  python3 scripts/alloc_trace.py --batch scripts/plans/trace5.jsonl --out /tmp/tr5 --frames-min-mib 64 2>&1 | grep -v -i warn | tail -4
  tar cf "$out/trace5.tar" -C /tmp tr5
fi
