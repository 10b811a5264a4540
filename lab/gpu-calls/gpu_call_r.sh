#!/usr/bin/env bash
# Sixth-session second call on nvidia-h200-x2 (carry .site). Runs detached (setsid) into /tmp/r on the machine,
# so it may outlast one 10-minute call:
#   bash scripts/gpu_call_r.sh start COMMIT   # starts it, waits up to 570 s, copies what is there to $OUT
#   bash scripts/gpu_call_r.sh wait           # waits up to 570 s more, copies to $OUT
# 1. `ftcalc run` of sharded QLoRA (FSDP2) on tiny-llama: random init with checkpoints, SIGTERM and --resume;
#    init: pretrained from a local folder (bnb_4bit_quant_storage bf16, accelerate's FSDP2 wrapping).
# 2. Plan r, blind (predictions registered first: data/predictions/r.json): sharded QLoRA on 2 GPUs, Llama-3-8B at
#    2048x1 and 4096x2, Llama-3-70B at 2048 and 4096 and shard-grad-op; i-003's host-bound configuration on 2 GPUs
#    and alone, again (host variance).
# 3. scripts/host_exp.py after it (in-process host drift, second sample).
set -u
W=/tmp/r; out=${OUT:-/tmp/out}; mkdir -p "$out" "$W"
if [ "$1" = start ]; then
  export PYTHONPATH=$PWD/.site:$PWD FTCALC_GIT_COMMIT=$2 PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 HF_HUB_OFFLINE=1 \
    TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
  (lscpu | head -20; nproc; free -g; cat /proc/loadavg; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv) > "$W/host.txt" 2>&1
  setsid bash -c '
    F="python3 -m ftcalc.cli"; TOK=data/tokenizers/tiny-llama; DATA=data/samples/alpaca_sample.jsonl
    grep -h "^cpu " /proc/stat > '$W'/procstat.txt
    {
    $F plan --model tiny-llama --method qlora --dataset $DATA --max-steps 40 --seq-len 256 --batch-size 2 \
      --save-steps 10 --val-set-size 16 --num-gpus 2 --distribution fsdp -o '$W'/fq.yaml
    $F run '$W'/fq.yaml --output-dir '$W'/fq-a > '$W'/fq-a.log 2>&1; echo "fq-a exit $?"
    $F run '$W'/fq.yaml --output-dir '$W'/fq-b > '$W'/fq-b.log 2>&1 & pid=$!
    until [ "$({ wc -l < '$W'/fq-b/train_log.jsonl; } 2>/dev/null || echo 0)" -ge 15 ]; do kill -0 $pid 2>/dev/null || break; sleep 0.2; done
    kill -TERM $pid; wait $pid; echo "fq-b after SIGTERM: exit $?"
    $F run '$W'/fq.yaml --output-dir '$W'/fq-b --resume >> '$W'/fq-b.log 2>&1; echo "fq-b resume exit $?"
    python3 -c "
import json
for d in (\"fq-a\", \"fq-b\"):
    r = json.load(open(\"'$W'/\" + d + \"/run_report.json\")); m = r[\"measured\"]
    print(d, r[\"status\"], m.get(\"final_step\"), m.get(\"train_loss\"), m.get(\"val_loss\"), r.get(\"relative_errors\"))"
    python3 -c "
import torch; from transformers import AutoModelForCausalLM
from ftcalc.recipe import hf_config; from ftcalc.catalog import resolve_model
torch.manual_seed(0); m = AutoModelForCausalLM.from_config(hf_config(resolve_model(\"tiny-llama\")), dtype=torch.bfloat16)
m.save_pretrained(\"'$W'/tinypre\")"
    $F plan --model '$W'/tinypre --method qlora --init pretrained --tokenizer $TOK --dataset $DATA --max-steps 20 \
      --seq-len 256 --batch-size 2 --val-set-size 16 --num-gpus 2 --distribution fsdp -o '$W'/fp.yaml
    $F run '$W'/fp.yaml --output-dir '$W'/fp > '$W'/fp.log 2>&1; echo "fp exit $?"; tail -3 '$W'/fp.log
    } > '$W'/log_exec.txt 2>&1
    python3 -m ftcalc.profile --batch scripts/plans/r.jsonl --out '$W'/r.jsonl --timeout 200 > '$W'/log_r.txt 2>&1
    grep -h "^cpu " /proc/stat >> '$W'/procstat.txt
    CUDA_VISIBLE_DEVICES=0 timeout 120 python3 scripts/host_exp.py '$W'/host_3b.json meta-llama/Llama-3.2-3B 1024 > '$W'/log_host.txt 2>&1
    grep -h "^cpu " /proc/stat >> '$W'/procstat.txt
    touch '$W'/done' < /dev/null > /dev/null 2>&1 &
fi
for i in $(seq 57); do
  cp $W/host.txt $W/*.jsonl $W/*.json $W/procstat.txt "$out"/ 2>/dev/null; [ -e $W/done ] && break; sleep 10; done
grep -h "^\[" $W/log_r.txt 2>/dev/null; cat $W/log_exec.txt 2>/dev/null | grep -v Warn | tail -30; grep -v Warn $W/log_host.txt 2>/dev/null
for f in $W/log_*.txt; do tail -c 20000 $f > "$out/$(basename $f)"; done
cp $W/fq-a/run_report.json "$out/fq-a.run_report.json" 2>/dev/null
[ -e $W/done ] && echo ALL DONE || echo STILL RUNNING
