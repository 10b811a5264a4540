#!/usr/bin/env bash
# ftcalc run on real GPUs (a 2-GPU machine: nvidia-h200-x2), everything with init: random, results under $OUT:
#  1. single GPU, in parallel on GPU 0 and GPU 1: Llama-3-8B LoRA and QLoRA specs from `ftcalc plan`, run by
#     `ftcalc run --record`, then the same spec by scripts/plain_loop.py (plain transformers + peft) on the
#     same GPU: tokens/s of both; plus a pre-flight refusal (a spec predicted not to fit, exit 2);
#  2. two GPUs: Llama-3-8B LoRA with DDP (`ftcalc run` relaunches itself under torchrun, --record), and
#     tiny-llama: DDP uninterrupted vs SIGTERM + --resume (final losses compared), FSDP2 full fine-tuning.
#   bash scripts/gpu_executor_check.sh COMMIT [single] [two]   (.site carried: bitsandbytes, liger-kernel, pydantic)
# Runs write under $WORK (checkpoints, final models: many files); the reports, logs and plain-loop results are
# copied to $OUT at the end (the device tool brings back a limited number of files).
set -uo pipefail
cd "$(dirname "$0")/.."
commit=${1:-unknown}; shift
PHASES=${*:-single two}
RESULTS=${OUT:-/tmp/ftcalc-gpu-check}; mkdir -p "$RESULTS"
OUT=${WORK:-/tmp/ftcalc-work}; mkdir -p "$OUT"
export PYTHONPATH=$PWD/.site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 FTCALC_GIT_COMMIT=$commit
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
F="python3 -m ftcalc.cli.main"
TOK=data/tokenizers/tiny-llama
DATA=data/samples/alpaca_sample.jsonl
REC=$OUT/executor_rows.jsonl
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/env.txt"
summary() {  # one line per report: status, step, loss, tokens/s, memory, relative errors
  python3 - "$@" <<'PY'
import json, sys
for path in sys.argv[1:]:
    try:
        r = json.load(open(path + "/run_report.json"))
    except OSError as e:
        print(path, "no report", e); continue
    m = r.get("measured", {})
    g = lambda k: round(m[k] / 2**30, 2) if m.get(k) else None
    print(f"{path}: {r['status']} step {m.get('final_step')} loss {m.get('train_loss')} val {m.get('val_loss')} "
          f"tok/s/GPU {m.get('tokens_per_second')} used {g('device_used_bytes')} alloc {g('peak_allocated_bytes')} "
          f"res {g('peak_reserved_bytes')} GiB rel {r.get('relative_errors')}")
PY
}
single() {  # GPU method
  local gpu=$1 m=$2
  $F plan --model llama-3-8b --method "$m" --init random --tokenizer $TOK --dataset $DATA --seq-len 2048 \
    --batch-size 4 --packing --max-steps 20 --gpu h200 -o "$OUT/l8-$m.yaml"
  CUDA_VISIBLE_DEVICES=$gpu $F run "$OUT/l8-$m.yaml" --output-dir "$OUT/l8-$m" --record --record-file "$REC"
  CUDA_VISIBLE_DEVICES=$gpu python3 scripts/plain_loop.py "$OUT/l8-$m.yaml" --steps 20 --out "$OUT/plain-$m.json"
  CUDA_VISIBLE_DEVICES=$gpu $F run "$OUT/l8-$m.yaml" --output-dir "$OUT/l8-$m-again"  # executor twice: the spread
}
if [[ " $PHASES " == *" single "* ]]; then
t0=$(date +%s)
single 0 lora > "$OUT/single-lora.log" 2>&1 &
single 1 qlora > "$OUT/single-qlora.log" 2>&1 &
wait
echo "single-GPU phase: $(( $(date +%s) - t0 )) s"
# pre-flight: full fine-tuning of 8B at 8x4096 without checkpointing does not fit one H200
$F plan --model llama-3-8b --method full --init random --tokenizer $TOK --dataset $DATA --seq-len 4096 --batch-size 8 \
  --packing --max-steps 4 --gpu h200 -o "$OUT/l8-toobig.yaml" > /dev/null
CUDA_VISIBLE_DEVICES=0 $F run "$OUT/l8-toobig.yaml" --output-dir "$OUT/l8-toobig" > "$OUT/preflight.log" 2>&1
echo "pre-flight refusal: exit $?: $(tail -1 "$OUT/preflight.log")"
summary "$OUT/l8-lora" "$OUT/l8-lora-again" "$OUT/l8-qlora" "$OUT/l8-qlora-again"
python3 -c "import json,sys; [print('plain', d['method'], d['tokens_per_second'], 'tok/s; alloc',
round(d['peak_allocated_bytes'] / 2**30, 2)) for d in (json.load(open(p)) for p in sys.argv[1:])]" "$OUT"/plain-*.json
tail -n 3 "$OUT/single-lora.log" "$OUT/single-qlora.log"
fi

if [[ " $PHASES " == *" two "* ]] && [ "$(python3 -c 'import torch; print(torch.cuda.device_count())')" -ge 2 ]; then
  t0=$(date +%s)
  $F plan --model llama-3-8b --method lora --init random --tokenizer $TOK --dataset $DATA --seq-len 2048 --batch-size 4 \
    --packing --max-steps 20 --gpu h200 --num-gpus 2 --distribution ddp -o "$OUT/l8-ddp.yaml" > /dev/null
  $F run "$OUT/l8-ddp.yaml" --output-dir "$OUT/l8-ddp" --record --record-file "$REC" > "$OUT/l8-ddp.log" 2>&1
  summary "$OUT/l8-ddp"; tail -n 2 "$OUT/l8-ddp.log"
  $F plan --model tiny-llama --method lora --dataset $DATA --max-steps 200 --seq-len 256 --batch-size 2 \
    --grad-accum 2 --save-steps 25 --val-set-size 16 --num-gpus 2 -o "$OUT/ddp.yaml" > /dev/null
  $F run "$OUT/ddp.yaml" --output-dir "$OUT/ddp-a" > "$OUT/ddp-a.log" 2>&1
  $F run "$OUT/ddp.yaml" --output-dir "$OUT/ddp-b" > "$OUT/ddp-b.log" 2>&1 & pid=$!
  until [ "$({ wc -l < "$OUT/ddp-b/train_log.jsonl"; } 2>/dev/null || echo 0)" -ge 60 ]; do
    kill -0 $pid 2>/dev/null || break; sleep 0.2
  done
  kill -TERM $pid; wait $pid; echo "ddp-b after SIGTERM: exit $?"
  summary "$OUT/ddp-b"
  $F run "$OUT/ddp.yaml" --output-dir "$OUT/ddp-b" --resume >> "$OUT/ddp-b.log" 2>&1
  summary "$OUT/ddp-a" "$OUT/ddp-b"
  $F plan --model tiny-llama --method full --dataset $DATA --max-steps 20 --seq-len 256 --batch-size 4 \
    --save-steps 10 --val-set-size 16 --num-gpus 2 --distribution fsdp -o "$OUT/fsdp.yaml" > /dev/null
  $F run "$OUT/fsdp.yaml" --output-dir "$OUT/fsdp" > "$OUT/fsdp.log" 2>&1
  summary "$OUT/fsdp"; tail -n 2 "$OUT/fsdp.log"
  ls "$OUT/fsdp/final" "$OUT/fsdp/checkpoints" 2>&1 | head
  echo "two-GPU phase: $(( $(date +%s) - t0 )) s"
fi
# what comes back: specs, logs, plain-loop results, recorded rows, and each run's report as NAME.run_report.json
cp "$OUT"/*.yaml "$OUT"/*.log "$OUT"/*.json "$OUT"/*.jsonl "$OUT/env.txt" "$RESULTS"/ 2>/dev/null
for d in "$OUT"/*/; do [ -f "$d/run_report.json" ] && cp "$d/run_report.json" "$RESULTS/$(basename "$d").run_report.json"; done
