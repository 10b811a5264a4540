#!/usr/bin/env bash
# Sixth session, nvidia-h200-x2 (carry .site): (1) the user's flow for sharded QLoRA on a real-size model:
# `ftcalc plan` Llama-3-8B QLoRA, FSDP on 2 GPUs, then `ftcalc run --record` (report: measured against
# predicted); (2) rank 0's allocator trace of Llama-3-8B LoRA under FSDP (e-006's configuration), for the
# compute stream's fragmentation of LoRA/QLoRA under FSDP (docs/notes/status.md, next steps).
#   bash scripts/gpu_call_v.sh COMMIT
set -u
export PYTHONPATH=$PWD/.site:$PWD FTCALC_GIT_COMMIT=$1 PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 HF_HUB_OFFLINE=1 \
  TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
out=${OUT:-/tmp/out}; W=/tmp/v; mkdir -p "$out" "$W" /tmp/tr7
F="python3 -m ftcalc.cli"
$F plan --model llama-3-8b --method qlora --init random --tokenizer data/tokenizers/tiny-llama \
  --dataset data/samples/alpaca_sample.jsonl --seq-len 2048 --batch-size 2 --packing --max-steps 20 --gpu h200 \
  --num-gpus 2 --distribution fsdp -o "$W/l8-fq.yaml"
timeout 240 $F run "$W/l8-fq.yaml" --output-dir "$W/l8-fq" --record --record-file "$out/executor_rows.jsonl" > "$W/l8-fq.log" 2>&1
echo "run exit $?"; grep -v Warn "$W/l8-fq.log" | tail -4
cp "$W/l8-fq.yaml" "$out/"; cp "$W/l8-fq/run_report.json" "$out/l8-fq.run_report.json" 2>/dev/null
timeout 200 python3 -m ftcalc.profile --batch scripts/plans/trace7.jsonl --out "$out/trace7.jsonl" --timeout 180 2>&1 | grep "^\["
cp /tmp/tr7/*.json.gz "$out"/
