#!/usr/bin/env bash
# Fifth-session call on nvidia-h200-x8 (carry .site): plan h (issue 8: 70B full FSDP, 405B LoRA FSDP on 8
# GPUs), then plan p (blind 8-GPU rows for issue 7, i-003's configuration on a third host, its one-GPU twin
# alone on the host). Predictions registered first: data/predictions/h.json, p.json.
# The work runs detached (setsid) into /tmp/hp on the machine, so it may outlast one 10-minute call:
#   bash scripts/gpu_call_hp.sh start COMMIT [PLAN_H_TIMEOUT_S]  # starts it, waits up to 570 s, copies what is there to $OUT
#   bash scripts/gpu_call_hp.sh wait           # waits up to 570 s more, copies to $OUT
set -u
W=/tmp/hp; out=${OUT:-/tmp/out}; mkdir -p "$out" "$W"
if [ "$1" = start ]; then
  export PYTHONPATH=$PWD/.site:$PWD FTCALC_GIT_COMMIT=$2 PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 \
    TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
  (lscpu | head -20; nproc; free -g; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv;
   nvidia-smi topo -m) > "$W/host.txt" 2>&1
  setsid bash -c "
    python3 -m ftcalc.profile --batch scripts/plans/h.jsonl --out $W/h.jsonl --timeout ${3:-330} > $W/log_h.txt 2>&1
    python3 -m ftcalc.profile --batch scripts/plans/p.jsonl --only multi --out $W/p.jsonl --timeout 200 > $W/log_p.txt 2>&1
    CUDA_VISIBLE_DEVICES=0 python3 -m ftcalc.profile --batch scripts/plans/p.jsonl --only single --out $W/p.jsonl --timeout 200 > $W/log_p1.txt 2>&1
    touch $W/done" < /dev/null > /dev/null 2>&1 &
fi
for i in $(seq 57); do  # copied every 10 s: a call cut short still brings back the rows finished so far
  cp $W/host.txt $W/*.jsonl "$out"/ 2>/dev/null; [ -e $W/done ] && break; sleep 10; done
grep -h "^\[" $W/log_*.txt
for f in $W/log_*.txt; do tail -c 20000 $f > "$out/$(basename $f)"; done
[ -e $W/done ] && echo ALL DONE || echo STILL RUNNING
