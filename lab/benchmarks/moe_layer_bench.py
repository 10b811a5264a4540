"""One Mixtral-8x7B decoder layer (random bf16 weights) forward + backward under peft LoRA: attention-only
targets vs "all-linear" (peft 0.21 also wraps the fused experts with lora.ParamWrapper), memory and time.

    PYTHONUNBUFFERED=1 python3 lab/benchmarks/moe_layer_bench.py   # on a CUDA GPU; TINY=1 DEV=cpu for a smoke run

Prints, per mode / tokens / experts implementation: memory kept after forward, peak in forward, peak in
forward + backward (MiB over the model), and the wall time of the third iteration (one timing, not a median).
Its output on one H200 is data/measurements/benchmarks/moe-layer-h200.md; ftcalc.model.throughput's
expert_lora_traffic_stacks is derived from it.
"""

from __future__ import annotations

import os
import time


def run(mode: str, n: int, impl: str = "grouped_mm") -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import MixtralConfig, MixtralForCausalLM

    dev = os.environ.get("DEV", "cuda")
    cuda = dev == "cuda"
    tiny = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2) \
        if os.environ.get("TINY") else {}
    with torch.device(dev):
        model = MixtralForCausalLM(MixtralConfig(vocab_size=1024, num_hidden_layers=1, **tiny))
    model.set_experts_implementation(impl)
    if mode == "attn":
        model = get_peft_model(model, LoraConfig(target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], r=16,
                                                 lora_alpha=32, lora_dropout=0.05))
    else:
        model = get_peft_model(model, LoraConfig(target_modules="all-linear", r=16, lora_alpha=32, lora_dropout=0.0))
    model.train()
    x = torch.randint(0, 1024, (1, n), device=dev)

    def mem() -> int:
        return torch.cuda.memory_allocated() if cuda else 0

    kept = peak_fwd = peak = 0
    for _ in range(3):
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        base, t0 = mem(), time.time()
        out = model(input_ids=x, labels=x)
        if cuda:
            torch.cuda.synchronize()
            kept, peak_fwd = mem() - base, torch.cuda.max_memory_allocated() - base
        out.loss.backward()
        if cuda:
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
        dt = time.time() - t0
        model.zero_grad(set_to_none=True)
    print(mode, n, impl, "kept_after_fwd_MiB", kept >> 20, "peak_fwd_MiB", peak_fwd >> 20,
          "peak_fwdbwd_MiB", peak >> 20, "ms", round(dt * 1e3, 1), flush=True)
    del model, out
    if cuda:
        torch.cuda.empty_cache()


def main() -> None:
    import peft
    import torch
    import transformers

    print(peft.__version__, transformers.__version__, torch.__version__, flush=True)
    torch.set_default_dtype(torch.bfloat16)
    for n in (2048, 8192):
        for mode in ("attn", "all"):
            run(mode, n)
    run("attn", 8192, "eager")
    run("all", 8192, "eager")


if __name__ == "__main__":
    main()
