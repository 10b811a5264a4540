"""The matmul rate of Mixtral's routed experts against a dense MLP of the same active FLOPs (eighth session).

    PYTHONUNBUFFERED=1 python3 lab/benchmarks/moe_rate_bench.py OUT.jsonl     # on a CUDA GPU; DEV=cpu TINY=1 to smoke

One decoder layer of Mixtral-8x7B (hidden 4096, 8 experts of intermediate 14336, top-2) and one dense Llama-style
layer with the same attention and an MLP of intermediate 2 x 14336 (the FLOPs of the two experts each token
runs), random bf16 weights, all frozen, the input requiring its gradient (what a frozen layer under LoRA does:
no weight gradients). Per token count it times on the GPU (CUDA events, median of 5 blocks of 4 iterations
after 3 warm-up ones, fresh random inputs) one iteration as gradient checkpointing runs a layer: a forward
under no_grad, a forward with grad, the backward to the input. The layers differ only in the MLP, so the
difference of the two times, over the dense MLP's FLOPs, gives the experts' rate relative to the dense one.
A third layer with a negligible MLP (intermediate 128) gives the attention's share to take off both.
Records the experts implementation transformers chose by default (the recipe does not set one).
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, MixtralForCausalLM

    dev = os.environ.get("DEV", "cuda")
    cuda = dev == "cuda"
    tiny = bool(os.environ.get("TINY"))
    h, inter, heads, kv = (64, 128, 4, 2) if tiny else (4096, 14336, 32, 8)
    common = dict(vocab_size=1024, num_hidden_layers=1, hidden_size=h, num_attention_heads=heads,
                  num_key_value_heads=kv, torch_dtype=torch.bfloat16)
    with torch.device(dev):
        moe = MixtralForCausalLM(MixtralConfig(intermediate_size=inter, num_local_experts=8, num_experts_per_tok=2,
                                               **common)).to(torch.bfloat16)
        dense = LlamaForCausalLM(LlamaConfig(intermediate_size=2 * inter, **common)).to(torch.bfloat16)
        attn = LlamaForCausalLM(LlamaConfig(intermediate_size=128, **common)).to(torch.bfloat16)  # ~no MLP
    impl = getattr(moe.config, "_experts_implementation", None) or getattr(moe.config, "experts_implementation", None)
    out = open(sys.argv[1], "w")
    out.write(json.dumps({"kind": "host", "device": torch.cuda.get_device_name() if cuda else "cpu",
                          "torch": torch.__version__, "experts_implementation": str(impl),
                          "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
    for m in (moe, dense, attn):
        m.requires_grad_(False)
        m.train()
    layers = {"mixtral": moe.model, "dense": dense.model, "attn": attn.model}
    for tokens in ([32, 64] if tiny else [1024, 2048, 4096, 8192, 16384]):
        rec = {"kind": "layer", "tokens": tokens}
        for name, body in layers.items():
            xs = [torch.randn(1, tokens, h, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3)]
            gs = [torch.randn(1, tokens, h, device=dev, dtype=torch.bfloat16) for _ in range(3)]
            i = [0]

            def run(body=body, xs=xs, gs=gs, i=i):
                i[0] += 1
                x, g = xs[i[0] % 3], gs[i[0] % 3]
                with torch.no_grad():
                    body(inputs_embeds=x)
                y = body(inputs_embeds=x).last_hidden_state
                y.backward(g)
                x.grad = None

            for _ in range(3):
                run()
            times = []
            for _ in range(5):
                if cuda:
                    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    torch.cuda.synchronize()
                    a.record()
                    for _ in range(4):
                        run()
                    b.record()
                    torch.cuda.synchronize()
                    times.append(a.elapsed_time(b) / 4)
                else:
                    t0 = time.perf_counter()
                    for _ in range(4):
                        run()
                    times.append((time.perf_counter() - t0) * 250)
            times.sort()
            rec[f"{name}_ms"] = times[2]
            rec[f"{name}_ms_all"] = times
        mlp_flops = 3 * 2.0 * h * (2 * inter) * 3 * tokens  # 3 matmuls, 3 passes (forward twice, input gradient)
        rec["dense_mlp_flops"] = mlp_flops
        out.write(json.dumps(rec) + "\n")
        out.flush()
        ratio = (rec["dense_ms"] - rec["attn_ms"]) / (rec["mixtral_ms"] - rec["attn_ms"])
        print(f"tokens {tokens:6d}  mixtral {rec['mixtral_ms']:8.2f} ms  dense {rec['dense_ms']:8.2f} ms  "
              f"attention only {rec['attn_ms']:7.2f} ms  experts' rate / dense MLP's {ratio:5.2f}", flush=True)
    print("experts implementation:", impl)


if __name__ == "__main__":
    main()
