#!/usr/bin/env bash
# GPU checks of `ftcalc run` (issue 5), tiny-llama with random weights: the CUDA test of
# tests/test_executor.py, one single-GPU LoRA run, and with 2+ GPUs a DDP LoRA run (uninterrupted, then
# SIGTERM + --resume, final losses compared) and an FSDP2 full fine-tune. Prints a summary per run.
#   scripts/gpu_executor_check.sh [OUT_DIR]        (PYTHON=python3 by default)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/ftcalc-gpu-check}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
F="$PY -m ftcalc.executor_cli"
DATA=data/samples/alpaca_sample.jsonl
summary() {  # one line per report: status, step, loss, tokens/s, memory
  $PY - "$@" <<'PY'
import json, sys
for path in sys.argv[1:]:
    r = json.load(open(path + "/run_report.json"))
    m = r.get("measured", {})
    print(f"{path}: {r['status']} step {m.get('final_step')} loss {m.get('train_loss')} val {m.get('val_loss')} "
          f"tok/s/GPU {m.get('tokens_per_second')} used {m.get('device_used_bytes')} "
          f"alloc {m.get('peak_allocated_bytes')} rel {r.get('relative_errors')}")
PY
}
$PY -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__, 'gpus', torch.cuda.device_count())"
$PY -m pytest tests/test_executor.py -m gpu -q -p no:cacheprovider

$F plan --model tiny-llama --method lora --dataset $DATA --max-steps 20 --seq-len 256 --batch-size 4 \
  --save-steps 10 --val-set-size 16 --gpu h100 -o "$OUT/single.yaml" && $F run "$OUT/single.yaml" --output-dir "$OUT/single"
summary "$OUT/single"

if [ "$($PY -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  $F plan --model tiny-llama --method lora --dataset $DATA --max-steps 400 --seq-len 256 --batch-size 2 \
    --grad-accum 2 --save-steps 50 --val-set-size 16 --num-gpus 2 -o "$OUT/ddp.yaml"
  $F run "$OUT/ddp.yaml" --output-dir "$OUT/ddp-a"
  $F run "$OUT/ddp.yaml" --output-dir "$OUT/ddp-b" & pid=$!
  until [ "$(wc -l < "$OUT/ddp-b/train_log.jsonl" 2>/dev/null || echo 0)" -ge 120 ]; do
    kill -0 $pid 2>/dev/null || break; sleep 0.2
  done
  kill -TERM $pid; wait $pid; echo "ddp-b after SIGTERM: exit $?"
  summary "$OUT/ddp-b"
  $F run "$OUT/ddp.yaml" --output-dir "$OUT/ddp-b" --resume
  summary "$OUT/ddp-a" "$OUT/ddp-b"
  $F plan --model tiny-llama --method full --dataset $DATA --max-steps 20 --seq-len 256 --batch-size 4 \
    --save-steps 10 --val-set-size 16 --num-gpus 2 -o "$OUT/fsdp.yaml"
  $F run "$OUT/fsdp.yaml" --output-dir "$OUT/fsdp"
  summary "$OUT/fsdp"
  ls "$OUT/fsdp/final" "$OUT/fsdp/checkpoints"
fi
