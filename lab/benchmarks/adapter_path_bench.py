"""The adapter path's marginal GPU time per adapted Linear, by shape, dtype and tokens (eighth session).

    PYTHONPATH=.site:. PYTHONUNBUFFERED=1 python3 lab/benchmarks/adapter_path_bench.py OUT.jsonl   # on a CUDA GPU
    DEV=cpu TINY=1 python3 lab/benchmarks/adapter_path_bench.py /tmp/x.jsonl                          # smoke run

For one Linear (in_features x out_features) as the recipe trains it under gradient checkpointing, it times on
the GPU (CUDA events, median of 5 blocks of 6 iterations, after 3 warm-up iterations, fresh random inputs)
one iteration of: a forward under no_grad (checkpointing's first forward), a forward with grad (the recompute)
and the backward to the input (the layer's input needs its gradient; the base weight is frozen). It does that
for the frozen base module alone and for the same module wrapped by peft (LoRA r, alpha 2r), and records both:
the difference is what the adapter path costs on the GPU for that Linear and micro-batch of M tokens.

Variants (the dtypes of ftcalc's recipe, docs/notes/time-model.md):
- lora: bf16 base Linear, bf16 input, fp32 adapters (peft's autocast_adapter_dtype), dropout 0.05
- lora_nodrop: the same without dropout
- qlora: bitsandbytes 4-bit (nf4, double quant, bf16 compute) base, fp32 input (peft's
  prepare_model_for_kbit_training runs the residual stream in fp32), fp32 adapters, dropout 0.05
- sqlora: the same 4-bit base, bf16 input and bf16 adapters (the sharded QLoRA build), dropout 0.05

Also times the adapter path's skinny matrix products alone (M x K by K x r, fp32 and bf16), which read a large
operand into a small output. Writes one JSON line per measurement to OUT and prints a short table.
"""

from __future__ import annotations

import json
import os
import sys
import time

LLAMA = {  # (in_features, out_features) of the Linears of a decoder layer
    "3b": [(3072, 3072), (3072, 1024), (3072, 8192), (8192, 3072)],
    "8b": [(4096, 4096), (4096, 1024), (4096, 14336), (14336, 4096)],
    "70b": [(8192, 8192), (8192, 1024), (8192, 28672), (28672, 8192)],
    "405b": [(16384, 16384), (16384, 1024), (16384, 53248), (53248, 16384)],
}


def main() -> None:
    import torch

    dev = os.environ.get("DEV", "cuda")
    tiny = bool(os.environ.get("TINY"))
    out_path = sys.argv[1]
    cuda = dev == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = False  # torch's default, stated: the recipe does not change it
    budget_s = float(os.environ.get("BUDGET_S", "420"))
    t_start = time.time()
    ms = [64, 128] if tiny else [1024, 2048, 4096, 8192, 16384]
    shapes = {"tiny": [(64, 64), (64, 16), (64, 192), (192, 64)]} if tiny else LLAMA
    lora16 = [("lora", model, fi, fo, m, 16) for model in shapes for fi, fo in shapes[model] for m in ms
              if tiny or m * max(fi, fo) <= 16384 * 53248]
    variants = [(v, model, fi, fo, m, r) for model in (["tiny"] if tiny else ["8b", "70b"])
                for fi, fo in shapes[model] for m in (ms if tiny else [1024, 4096, 8192])
                for v, r in (("lora_nodrop", 16), ("qlora", 16), ("sqlora", 16), ("lora", 64))]
    part = os.environ.get("PART", "all")  # all | skinny | lora | variants: one device call each fits the lease
    plans = {"all": lora16 + variants, "skinny": [], "lora": lora16, "variants": variants}[part]
    skinny = [(model, m, k, dt) for model in (shapes if part in ("all", "skinny") else [])
              for k in sorted({fi for fi, _ in shapes[model]} | {fo for _, fo in shapes[model]})
              for m in ms for dt in ("float32", "bfloat16")]

    with open(out_path, "w") as f:
        f.write(json.dumps({"kind": "host", "device": torch.cuda.get_device_name() if cuda else "cpu",
                            "torch": torch.__version__, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
        for model, m, k, dt in skinny:
            if time.time() - t_start > budget_s:
                break
            f.write(json.dumps(time_skinny(torch, dev, m, k, getattr(torch, dt), model)) + "\n")
            f.flush()
        for v, model, fi, fo, m, r in plans:
            if time.time() - t_start > budget_s:
                print("budget spent; stopped", flush=True)
                break
            try:
                rec = time_module(torch, dev, v, fi, fo, m, r)
            except Exception as e:  # noqa: BLE001 - record and go on (an OOM at the largest shapes)
                rec = {"error": f"{type(e).__name__}: {e}"[:300]}
                if cuda:
                    torch.cuda.empty_cache()
            rec.update(kind="module", variant=v, model=model, in_features=fi, out_features=fo, tokens=m, r=r)
            f.write(json.dumps(rec) + "\n")
            f.flush()
            if "error" not in rec:
                print(f"{v:11s} {model:4s} {fi:5d}x{fo:<5d} M={m:<5d} r={r:<3d} base {rec['base_ms']:8.3f} ms  "
                      f"adapted {rec['adapted_ms']:8.3f} ms  path {rec['adapted_ms'] - rec['base_ms']:7.3f} ms",
                      flush=True)
            else:
                print(v, model, fi, fo, m, r, rec["error"], flush=True)


def _timer(torch, dev: str):
    cuda = dev == "cuda"

    def timed(fn, blocks: int = 5, per_block: int = 6, warmup: int = 3) -> float:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(blocks):
            if cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                torch.cuda.synchronize()
                a.record()
                for _ in range(per_block):
                    fn()
                b.record()
                torch.cuda.synchronize()
                times.append(a.elapsed_time(b) / per_block)
            else:
                t0 = time.perf_counter()
                for _ in range(per_block):
                    fn()
                times.append((time.perf_counter() - t0) * 1e3 / per_block)
        times.sort()
        return times[len(times) // 2]

    return timed


def time_skinny(torch, dev: str, m: int, k: int, dtype, model: str) -> dict:
    """x (M x K) @ A^T (K x 16), and its weight gradient g^T (16 x M) @ x (M x K), in one dtype."""
    timed = _timer(torch, dev)
    xs = [torch.randn(m, k, device=dev, dtype=dtype) for _ in range(3)]
    a = torch.randn(16, k, device=dev, dtype=dtype) / k ** 0.5
    g = torch.randn(m, 16, device=dev, dtype=dtype)
    i = [0]

    def fwd():
        i[0] += 1
        return xs[i[0] % 3] @ a.t()

    def wgrad():
        i[0] += 1
        return g.t() @ xs[i[0] % 3]

    rec = {"kind": "skinny", "model": model, "tokens": m, "k": k, "dtype": str(dtype).split(".")[-1],
           "fwd_ms": timed(fwd), "wgrad_ms": timed(wgrad)}
    ref = (xs[0].double() @ a.t().double())
    rec["fwd_rel_err"] = float((( xs[0] @ a.t()).double() - ref).norm() / ref.norm())
    return rec


def time_module(torch, dev: str, variant: str, fi: int, fo: int, m: int, r: int) -> dict:
    from peft import LoraConfig, get_peft_model

    timed = _timer(torch, dev)
    four_bit = variant in ("qlora", "sqlora")
    x_dtype = torch.float32 if variant == "qlora" else torch.bfloat16

    class Holder(torch.nn.Module):
        def __init__(self, proj):
            super().__init__()
            self.proj = proj

        def forward(self, x):
            return self.proj(x)

    w = torch.randn(fo, fi, dtype=torch.bfloat16) / fi ** 0.5
    if four_bit:
        import bitsandbytes as bnb

        base = bnb.nn.Linear4bit(fi, fo, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4",
                                 compress_statistics=True)
        base.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4", compress_statistics=True)
        base = base.to(dev)  # quantizes on the move to the GPU
    else:
        base = torch.nn.Linear(fi, fo, bias=False, dtype=torch.bfloat16, device=dev)
        with torch.no_grad():
            base.weight.copy_(w.to(dev))
        base.weight.requires_grad_(False)
    holder = Holder(base)
    xs = [torch.randn(m, fi, device=dev, dtype=x_dtype, requires_grad=True) for _ in range(3)]
    gs = [torch.randn(m, fo, device=dev, dtype=x_dtype) for _ in range(3)]
    i = [0]

    def step(mod):
        def run():
            i[0] += 1
            x, g = xs[i[0] % 3], gs[i[0] % 3]
            with torch.no_grad():
                mod(x)
            y = mod(x)
            y.backward(g)
            x.grad = None
        return run

    base_ms = timed(step(holder))
    drop = 0.0 if variant == "lora_nodrop" else 0.05
    peft_model = get_peft_model(holder, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=drop, target_modules=["proj"]))
    peft_model.train()
    lora_dtypes = sorted({str(p.dtype) for n, p in peft_model.named_parameters() if "lora_" in n})
    if variant == "sqlora":
        for n, p in peft_model.named_parameters():
            if "lora_" in n:
                p.data = p.data.to(torch.bfloat16)
        lora_dtypes = ["torch.bfloat16"]
    for n, p in peft_model.named_parameters():  # lora_B starts at zero; make it random like a trained adapter
        if "lora_B" in n:
            with torch.no_grad():
                p.normal_(0, 0.02)
    adapted_ms = timed(step(peft_model))
    out = peft_model(xs[0])
    return {"base_ms": base_ms, "adapted_ms": adapted_ms, "adapter_dtypes": lora_dtypes,
            "out_dtype": str(out.dtype), "x_dtype": str(x_dtype)}


if __name__ == "__main__":
    main()
