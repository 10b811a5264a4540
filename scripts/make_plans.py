"""Write the JSONL plans of profiling runs sent to the GPU machines (one line = one configuration).

    python scripts/make_plans.py        # writes lab/plans/*.jsonl

Each plan is sized to finish inside one 10-minute device call. The design covers the mechanisms the
memory model separates: method x checkpointing x seq/batch (activations, logits), optimizer states,
precision, LoRA rank/targets/dropout, vocabulary size (Gemma 256k), tied embeddings, eager attention,
fused loss, and configurations expected to run out of memory.
"""

import json
from pathlib import Path

L8 = "meta-llama/Meta-Llama-3-8B"
L1 = "meta-llama/Llama-3.2-1B"
M7 = "mistralai/Mistral-7B-v0.3"
Q3 = "Qwen/Qwen2.5-3B"
G2 = "google/gemma-2-2b"
L70 = "meta-llama/Meta-Llama-3-70B"
Q8 = "Qwen/Qwen3-8B"
Q7 = "Qwen/Qwen2.5-7B"


def c(model, method, seq, bs, **kw):
    return {"model": model, "method": method, "seq_len": seq, "batch_size": bs, "steps": 5, "warmup_steps": 2, **kw}


PLANS = {
    "a": [
        c(L8, "lora", 2048, 1),
        c(L8, "lora", 2048, 4),
        c(L8, "lora", 512, 1, gradient_checkpointing=False),
        c(L8, "lora", 2048, 1, gradient_checkpointing=False),
        c(L8, "lora", 4096, 2, lora_r=64),
        c(L8, "lora", 8192, 1, lora_r=8),
        c(L8, "qlora", 2048, 1),
        c(L8, "qlora", 2048, 4),
        c(L8, "qlora", 1024, 2, gradient_checkpointing=False),
        c(L8, "qlora", 8192, 1, lora_r=128),
        c(L8, "qlora", 2048, 1, optimizer="paged_adamw_32bit"),
        c(L8, "lora", 2048, 2, optimizer="adamw_8bit"),
        c(L8, "full", 512, 1, gradient_checkpointing=True),
        c(L8, "full", 512, 1, gradient_checkpointing=True, optimizer="adamw_8bit"),
        c(L1, "full", 2048, 4),
        c(L1, "full", 1024, 8, gradient_checkpointing=True, precision="bf16-mixed"),
        c(L1, "lora", 4096, 4, gradient_checkpointing=False, lora_dropout=0.0),
        c(M7, "lora", 2048, 2),
        c(Q3, "qlora", 4096, 2),
        c(G2, "lora", 1024, 2),
        c(G2, "full", 512, 4, gradient_checkpointing=True),
        c(L8, "lora", 2048, 16),
        c(L8, "lora", 4096, 1, attention="eager"),
        c(L8, "lora", 2048, 2, loss="fused"),
        c(L70, "qlora", 1024, 1),
    ],
    # H200: configurations that do not fit an H100, plus new points for every mechanism
    "b": [
        c(L8, "lora", 1024, 8),
        c(L8, "lora", 4096, 4, lora_r=32),
        c(L8, "lora", 2048, 4, gradient_checkpointing=False),
        c(L8, "qlora", 4096, 4),
        c(L8, "qlora", 2048, 8, lora_r=64),
        c(L8, "qlora", 512, 16, gradient_checkpointing=False),
        c(L8, "full", 1024, 2, gradient_checkpointing=True),
        c(L8, "full", 2048, 1, optimizer="paged_adamw_8bit"),
        c(L8, "full", 1024, 1, gradient_checkpointing=True, optimizer="adamw_torch_fused"),
        c(L8, "lora", 2048, 2, precision="bf16-mixed"),
        c(L70, "qlora", 2048, 1),
        c(L70, "qlora", 4096, 1, lora_r=64),
        c(L70, "qlora", 1024, 2, optimizer="adamw_8bit"),
        c(M7, "qlora", 4096, 2),
        c(Q3, "lora", 2048, 4, gradient_checkpointing=False),
        c(Q3, "full", 2048, 2, gradient_checkpointing=True),
        c(G2, "qlora", 2048, 2),
        c(G2, "lora", 2048, 4, gradient_checkpointing=False),
        c(L1, "lora", 8192, 2),
        c(L1, "full", 4096, 2, optimizer="adamw_8bit"),
        c(L1, "qlora", 2048, 8, gradient_checkpointing=False),
        c(L8, "lora", 8192, 4),
        c(Q8, "lora", 2048, 2),
        c(L8, "lora", 4096, 8, gradient_checkpointing=False),
    ],
    # H100 again: optimizers, precisions, attention, fused loss, 4-bit variants, targets, two expected OOMs
    "c": [
        c(L8, "full", 512, 2, gradient_checkpointing=False, optimizer="adamw_8bit"),
        c(L8, "full", 1024, 1, gradient_checkpointing=True, optimizer="adafactor"),
        c(L8, "full", 512, 1, gradient_checkpointing=True, optimizer="sgd"),
        c(L1, "full", 2048, 2, gradient_checkpointing=False, precision="bf16-mixed"),
        c(L1, "full", 1024, 4, gradient_checkpointing=False),
        c(L1, "lora", 2048, 4, gradient_checkpointing=False, precision="bf16-mixed"),
        c(L1, "lora", 1024, 4, precision="32-true"),
        c(Q3, "full", 1024, 4, gradient_checkpointing=False),
        c(Q3, "lora", 4096, 2, attention="eager"),
        c(L8, "lora", 2048, 4, lora_targets="q_proj,v_proj"),
        c(L8, "lora", 1024, 2, gradient_checkpointing=False, lora_dropout=0.0),
        c(L8, "qlora", 2048, 2, quant_type="fp4", double_quant=False),
        c(L8, "qlora", 4096, 2, loss="fused"),
        c(L8, "lora", 4096, 4, loss="fused"),
        c(M7, "lora", 4096, 2, gradient_checkpointing=False),
        c(M7, "full", 512, 2, gradient_checkpointing=True, optimizer="adamw_8bit"),
        c(G2, "full", 1024, 2, gradient_checkpointing=False, optimizer="adamw_8bit"),
        c(G2, "lora", 4096, 2),
        c(Q8, "qlora", 4096, 2),
        c(Q7, "lora", 2048, 2),
        c(L8, "lora", 1024, 4, optimizer="paged_adamw_8bit"),
        c(L70, "qlora", 2048, 1, lora_r=8, lora_targets="q_proj,k_proj,v_proj,o_proj"),
        c(L1, "qlora", 8192, 1),
        c(L8, "full", 1024, 1, gradient_checkpointing=False, optimizer="adamw_torch_fused"),
        c(L8, "lora", 4096, 2, gradient_checkpointing=False),
    ],
    # blind check: measured after data/coefficients.json was frozen (commit of 2026-11-22, 06:00 UTC);
    # new models and settings, none refitted on
    "d": [
        c("Qwen/Qwen3-8B", "lora", 4096, 1, gradient_checkpointing=False),
        c(Q7, "qlora", 8192, 1),
        c(M7, "qlora", 2048, 8, lora_r=32),
        c("meta-llama/Llama-3.2-3B", "lora", 4096, 4),
        c("meta-llama/Llama-3.2-3B", "full", 2048, 2, optimizer="adamw_torch_fused"),
        c("microsoft/Phi-3.5-mini-instruct", "lora", 2048, 4),
        c("Qwen/Qwen2.5-1.5B", "full", 4096, 2),
        c(L8, "qlora", 1024, 8, gradient_checkpointing=False, lora_targets="q_proj,k_proj,v_proj,o_proj"),
        c(L8, "lora", 8192, 2, optimizer="adamw_8bit", lora_r=32),
        c(L70, "qlora", 3072, 1, lora_r=32),
        c("Qwen/Qwen3-4B", "full", 1024, 4, gradient_checkpointing=True, optimizer="adamw_8bit"),
        c(L8, "lora", 3072, 6),
    ],
    # the multi-GPU model, on nvidia-h200-x2 (2 GPUs, NCCL): DDP LoRA 8B, FSDP2 full 8B, FSDP2 LoRA 70B in bf16, each at two
    # sequence lengths, FSDP LoRA 8B and DDP full 8B for the model's other terms, then 1-GPU baselines of the
    # same configurations (scaling efficiency) where no H200 row exists yet. 8 steps, 3 warm-up.
    "e": [
        c(L8, "lora", 1024, 8, num_gpus=2, distribution="ddp", steps=8, warmup_steps=3),
        c(L8, "lora", 4096, 4, num_gpus=2, distribution="ddp", steps=8, warmup_steps=3),
        c(L8, "full", 1024, 2, gradient_checkpointing=True, num_gpus=2, distribution="fsdp", steps=8, warmup_steps=3),
        c(L70, "lora", 1024, 2, num_gpus=2, distribution="fsdp", steps=6, warmup_steps=2),
        c(L70, "lora", 4096, 1, num_gpus=2, distribution="fsdp", steps=6, warmup_steps=2),
        c(L8, "full", 4096, 2, gradient_checkpointing=True, num_gpus=2, distribution="fsdp", steps=8, warmup_steps=3),
        c(L8, "lora", 2048, 4, num_gpus=2, distribution="fsdp", steps=8, warmup_steps=3),
        c(L8, "full", 1024, 1, gradient_checkpointing=True, optimizer="adamw_8bit", num_gpus=2, distribution="ddp",
          steps=8, warmup_steps=3),
        c(L8, "full", 4096, 2, gradient_checkpointing=True, steps=8, warmup_steps=3),
        c(L8, "lora", 2048, 4, steps=8, warmup_steps=3),
    ],
    # blind check of the multi-GPU model (2xH200): measured after ftcalc/model/sharding.py and
    # data/solver_assumptions.json were set from plan e and committed; new models, precisions and methods
    "f": [
        c(M7, "full", 2048, 2, gradient_checkpointing=True, num_gpus=2, distribution="fsdp", steps=8, warmup_steps=3),
        c(Q7, "lora", 4096, 2, num_gpus=2, distribution="fsdp", steps=8, warmup_steps=3),
        c(L70, "lora", 2048, 2, num_gpus=2, distribution="fsdp", steps=6, warmup_steps=2),
        c(L8, "qlora", 2048, 4, num_gpus=2, distribution="ddp", steps=8, warmup_steps=3),
        c("meta-llama/Llama-3.2-3B", "full", 2048, 4, gradient_checkpointing=True, num_gpus=2, distribution="ddp",
          steps=8, warmup_steps=3),
        c(L8, "full", 2048, 2, gradient_checkpointing=True, precision="bf16-mixed", num_gpus=2, distribution="fsdp",
          steps=8, warmup_steps=3),
        c(L8, "lora", 8192, 1, num_gpus=2, distribution="ddp", steps=8, warmup_steps=3),
    ],
    # 4 GPUs (nvidia-h200-x4): N-scaling of FSDP/DDP, shard-grad-op (modelled, unmeasured), and the two
    # configurations that plans e/f miss (DDP full fine-tuning with adamw_8bit: e-007, tied Llama-3.2-3B: f-004)
    # at N=4. Predictions registered in lab/predictions/ before the run (scripts/register_predictions.py).
    "g": [
        c(L70, "lora", 2048, 2, num_gpus=4, distribution="fsdp", steps=6, warmup_steps=2),
        c(L8, "full", 2048, 2, gradient_checkpointing=True, num_gpus=4, distribution="fsdp", steps=8, warmup_steps=3),
        c(L8, "full", 2048, 2, gradient_checkpointing=True, num_gpus=4, distribution="fsdp",
          reshard_after_forward=False, steps=8, warmup_steps=3),
        c(L8, "lora", 2048, 4, num_gpus=4, distribution="ddp", steps=8, warmup_steps=3),
        c(L8, "full", 2048, 2, gradient_checkpointing=True, num_gpus=2, distribution="fsdp",
          reshard_after_forward=False, steps=8, warmup_steps=3),
        c(L8, "full", 1024, 1, gradient_checkpointing=True, optimizer="adamw_8bit", num_gpus=4, distribution="ddp",
          steps=8, warmup_steps=3),
        c("meta-llama/Llama-3.2-3B", "full", 2048, 4, gradient_checkpointing=True, num_gpus=4, distribution="ddp",
          steps=8, warmup_steps=3),
    ],
    # one GPU of the same machine: the one-GPU twins of f-004 and e-007 (what DDP adds), b-015's configuration
    # again (run-to-run spread), and an MoE model: Mixtral LoRA in bf16 (fits one H200) and QLoRA
    # (predicted not to fit: peft's prepare_model_for_kbit_training upcasts the fused 3-D expert tensors,
    # which bitsandbytes does not quantize, to fp32)
    "g1": [
        c("meta-llama/Llama-3.2-3B", "full", 2048, 4, gradient_checkpointing=True, steps=8, warmup_steps=3),
        c(L8, "full", 1024, 1, gradient_checkpointing=True, optimizer="adamw_8bit", steps=8, warmup_steps=3),
        c(Q3, "full", 1024, 4, gradient_checkpointing=True, steps=8, warmup_steps=3),
        c("mistralai/Mixtral-8x7B-v0.1", "lora", 2048, 1, steps=6, warmup_steps=2),
        c("mistralai/Mixtral-8x7B-v0.1", "lora", 4096, 2, steps=6, warmup_steps=2),
        c("mistralai/Mixtral-8x7B-v0.1", "qlora", 2048, 1, steps=5, warmup_steps=2),
    ],
    # blind check of what plan g changed (FSDP gathered units in full, shard-grad-op, measured DDP bucket
    # bandwidth) on new models, with the predictions registered first (lab/predictions/i.json); the
    # one-GPU twin of a DDP run with little compute per step (exposed all-reduce); Mixtral LoRA, which
    # peft 0.21 applies to the fused expert tensors too (lora.ParamWrapper, which needs lora_dropout 0)
    "i": [
        c(M7, "full", 2048, 2, gradient_checkpointing=True, num_gpus=4, distribution="fsdp", steps=8, warmup_steps=3),
        c(M7, "full", 2048, 2, gradient_checkpointing=True, num_gpus=4, distribution="fsdp",
          reshard_after_forward=False, steps=8, warmup_steps=3),
        c(Q7, "lora", 4096, 2, num_gpus=2, distribution="fsdp", reshard_after_forward=False, steps=8, warmup_steps=3),
        c("meta-llama/Llama-3.2-3B", "full", 1024, 1, gradient_checkpointing=True, num_gpus=4, distribution="ddp",
          steps=8, warmup_steps=3),
        c(Q3, "full", 1024, 4, gradient_checkpointing=True, num_gpus=2, distribution="ddp", steps=8, warmup_steps=3),
        c("meta-llama/Llama-3.2-3B", "full", 1024, 1, gradient_checkpointing=True, steps=8, warmup_steps=3),
        c("mistralai/Mixtral-8x7B-v0.1", "lora", 2048, 1, lora_targets="q_proj,k_proj,v_proj,o_proj", steps=6,
          warmup_steps=2),
        c("mistralai/Mixtral-8x7B-v0.1", "lora", 2048, 1, lora_dropout=0.0, steps=6, warmup_steps=2),
        c("mistralai/Mixtral-8x7B-v0.1", "lora", 4096, 2, lora_dropout=0.0, steps=6, warmup_steps=2),
    ],
    # 8×H200: 70B full fine-tuning and 405B LoRA (needs nvidia-h200-x8); predictions registered in docs/multi-gpu.md first
    "h": [
        c(L70, "full", 2048, 1, gradient_checkpointing=True, num_gpus=8, distribution="fsdp", steps=6, warmup_steps=2),
        c(L70, "full", 4096, 1, gradient_checkpointing=True, num_gpus=8, distribution="fsdp", steps=6, warmup_steps=2),
        c("meta-llama/Llama-3.1-405B", "lora", 1024, 1, num_gpus=8, distribution="fsdp", steps=4, warmup_steps=1),
        c("meta-llama/Llama-3.1-405B", "lora", 2048, 1, num_gpus=8, distribution="fsdp", steps=4, warmup_steps=1),
    ],
    # a smoke check of every launch path on a fresh GPU machine before a costly plan (scripts/gpu_smoke.sh): the
    # tiny config, one line per wrapping the recipe runs; scripts/check_smoke.py judges the rows (plan h's
    # first attempt on 8xH200 lost 20 minutes of device time to a sharded-build bug this would have shown)
    "smoke": [
        c("ftcalc/tiny-llama", "full", 256, 2, steps=3, warmup_steps=1),
        c("ftcalc/tiny-llama", "qlora", 256, 2, steps=3, warmup_steps=1),
        c("ftcalc/tiny-llama", "full", 256, 2, steps=3, warmup_steps=1, num_gpus=2, distribution="fsdp"),
        c("ftcalc/tiny-llama", "full", 256, 2, steps=3, warmup_steps=1, num_gpus=2, distribution="fsdp",
          reshard_after_forward=False),
        c("ftcalc/tiny-llama", "full", 256, 2, steps=3, warmup_steps=1, num_gpus=2, distribution="fsdp",
          offload_params=True),
        c("ftcalc/tiny-llama", "lora", 256, 2, steps=3, warmup_steps=1, num_gpus=2, distribution="fsdp"),
        c("ftcalc/tiny-llama", "lora", 256, 2, steps=3, warmup_steps=1, num_gpus=2, distribution="ddp"),
        c("ftcalc/tiny-llama", "qlora", 256, 2, steps=3, warmup_steps=1, num_gpus=2, distribution="ddp"),
        # sharded QLoRA (recipe.build_model_sharded): its first GPU run (smoke-h200x2-q.jsonl: all good)
        c("ftcalc/tiny-llama", "qlora", 256, 2, steps=3, warmup_steps=1, num_gpus=2, distribution="fsdp"),
    ],
    # on the nvidia-h200-x8 machine after plan h: blind (predictions registered first in
    # lab/predictions/p.json) 8-GPU rows for the multi-GPU accuracy goal (FSDP full, shard-grad-op, DDP LoRA, 70B LoRA at 8), a
    # third host for i-003's configuration (its repeat m-000 was within 2 %), and its one-GPU twin with no
    # other process on the host
    "p": [
        c("meta-llama/Llama-3.2-3B", "full", 1024, 1, gradient_checkpointing=True, num_gpus=4, distribution="ddp",
          steps=8, warmup_steps=3),
        c(L8, "full", 2048, 2, gradient_checkpointing=True, num_gpus=8, distribution="fsdp", steps=8, warmup_steps=3),
        c(Q7, "full", 4096, 1, gradient_checkpointing=True, num_gpus=8, distribution="fsdp",
          reshard_after_forward=False, steps=8, warmup_steps=3),
        c(L8, "lora", 2048, 2, num_gpus=8, distribution="ddp", steps=8, warmup_steps=3),
        c(L70, "lora", 2048, 1, num_gpus=8, distribution="fsdp", steps=6, warmup_steps=2),
        c("meta-llama/Llama-3.2-3B", "full", 1024, 1, gradient_checkpointing=True, steps=8, warmup_steps=3),
    ],
}

if __name__ == "__main__":
    out = Path(__file__).resolve().parent.parent / "lab" / "plans"
    out.mkdir(exist_ok=True)
    for name, rows in PLANS.items():
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(name, len(rows))
