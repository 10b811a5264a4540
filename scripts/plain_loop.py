"""The baseline for the executor's speed check: a plain transformers + peft training loop on a spec's settings.

    python scripts/plain_loop.py spec.yaml --steps 20 --out plain.json

No ftcalc executor in the loop: the model comes from ``AutoModelForCausalLM.from_config`` (random
weights, as ``init: random``), the adapters from ``peft.get_peft_model``, the optimizer is torch AdamW,
and the loop is forward / backward / clip / step / schedule / zero_grad, the way the transformers and
peft examples write it. The batches are the spec's own (ftcalc.train.dataset builds them before the clock
starts, so both loops see the same token positions; each step copies its batch to the GPU inside the
timed region, as a loop over a DataLoader does). QLoRA has no plain random-weight path in
transformers (``from_config`` does not quantize), so its 4-bit model is ftcalc's random NF4 build and
everything after it is plain peft. Prints and writes tokens/s (all positions, median step after 2
warm-up steps) and the CUDA peaks.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import yaml


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out")
    ap.add_argument("--device", default="cuda:0", help="cuda:0, or cpu for a smoke test")
    a = ap.parse_args()
    raw = yaml.safe_load(Path(a.spec).read_text())

    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, get_scheduler

    from ftcalc.tables.catalog import resolve_model
    from ftcalc.train.dataset import build_data, load_tokenizer, shipped_tokenizer
    from ftcalc.train.recipe import build_qlora_random, hf_config
    from ftcalc.train.spec import TrainingSpec

    spec = TrainingSpec.model_validate(raw)
    mspec = resolve_model(spec.model.base_model)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.set_device(dev)
    sync = torch.cuda.synchronize if cuda else (lambda _d: None)
    torch.manual_seed(spec.training.seed)
    tok = load_tokenizer(spec.model.tokenizer or str(shipped_tokenizer(mspec.id, mspec.aliases)))
    data = build_data(Path(spec.data.path), spec.data.format, tok, seq_len=spec.sequence_len, seed=spec.training.seed,
                      val_set_size=0, sample_packing=spec.data.sample_packing, train_on=spec.data.train_on, micro_batch_size=spec.micro_batch_size,
                      gradient_accumulation_steps=1, world_size=1, on_bad_line="skip",
                      vocab_size=mspec.arch.vocab_size)
    batches = [data.micro_batch(m, 0) for m in range(a.steps)]  # host tensors, as a DataLoader yields them

    if spec.method == "qlora":
        opts = spec.to_options()
        model = build_qlora_random(mspec, opts, str(dev))
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        dtype = torch.bfloat16 if spec.precision == "bf16-true" else torch.float32
        with torch.device(dev):
            model = AutoModelForCausalLM.from_config(hf_config(mspec), dtype=dtype)
    model.config.use_cache = False
    if spec.to_options().checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lcfg = LoraConfig(r=spec.lora.lora_r, lora_alpha=spec.lora.lora_alpha, lora_dropout=spec.lora.lora_dropout,
                      target_modules=list(spec.lora.lora_targets), bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lcfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=spec.training.learning_rate, weight_decay=spec.training.weight_decay)
    sched = get_scheduler(spec.training.lr_scheduler, opt, num_warmup_steps=0, num_training_steps=a.steps)
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
    times, losses = [], []
    for host in batches:
        sync(dev)
        t0 = time.perf_counter()
        b = {k: v.to(dev) for k, v in host.items()}
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            loss = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, spec.training.max_grad_norm or 1e9)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        sync(dev)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times[2:])
    positions = spec.micro_batch_size * spec.sequence_len
    out = {"spec": a.spec, "method": spec.method, "steps": a.steps, "step_seconds": [round(t, 5) for t in times],
           "step_seconds_median": round(med, 5), "tokens_per_second": round(positions / med, 1),
           "final_loss": losses[-1]}
    if cuda:
        out.update(peak_allocated_bytes=torch.cuda.max_memory_allocated(dev),
                   peak_reserved_bytes=torch.cuda.max_memory_reserved(dev), gpu_name=torch.cuda.get_device_name(dev))
    print(json.dumps({k: v for k, v in out.items() if k != "step_seconds"}))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
