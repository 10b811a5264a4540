"""Worker for tests/train/test_sharded_build.py: run under torchrun with 2 CPU processes (gloo).

recipe.build_model_sharded through accelerate's own FSDP2 wrapping (fsdp2_prepare_model; accelerate sets
FSDP up only on GPUs, so a stand-in carries its plugin), then three training steps. Prints one JSON line
file per rank (in the folder given as the second argument) with what the test checks.
"""

import json
import sys
import types
from pathlib import Path

import torch
import torch.distributed as dist
from accelerate.utils import FullyShardedDataParallelPlugin

from ftcalc.model.options import make_options
from ftcalc.tables.catalog import resolve_model
from ftcalc.train import recipe

dist.init_process_group("gloo")
method = sys.argv[1]
spec = resolve_model("tiny-llama")
opts = make_options(method=method, seq_len=32, batch_size=2,
                    precision="bf16-mixed" if method == "full" else "bf16-true")
plugin = FullyShardedDataParallelPlugin(fsdp_version=2, reshard_after_forward=True,
                                        auto_wrap_policy="transformer_based_wrap",
                                        transformer_cls_names_to_wrap=["LlamaDecoderLayer"])
acc = types.SimpleNamespace(state=types.SimpleNamespace(fsdp_plugin=plugin), mixed_precision="no",
                            torch_device_mesh=None, is_main_process=dist.get_rank() == 0,
                            device=torch.device("cpu"), parallelism_config=None, _models=[],
                            distributed_type="FSDP")
model = recipe.build_model_sharded(spec, opts, acc, "cpu")
local = sum(p.to_local().numel() for p in model.parameters())
full = sum(p.numel() for p in model.parameters())
meta_left = [n for n, p in model.named_parameters() if p.to_local().is_meta]
inv_freq = [b for n, b in model.named_buffers() if n.endswith("inv_freq")]
extra = {}
if method == "qlora":  # the gathered 4-bit rows and the replicated quantization state describe the seeded weight
    import bitsandbytes as bnb

    mods = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    m = mods[5]
    gen = torch.Generator().manual_seed(1_000_003 + 5)
    w = torch.empty(m.out_features, m.in_features, dtype=torch.bfloat16).normal_(0.0, 0.02, generator=gen)
    packed, _ = bnb.functional.quantize_4bit(w, blocksize=64, compress_statistics=opts.double_quant,
                                             quant_type=opts.quant_type, quant_storage=torch.bfloat16)
    gathered = m.weight.full_tensor()
    deq = bnb.functional.dequantize_4bit(gathered, m.quant_state)
    extra = {"n_4bit": len(mods), "packed_equal": bool(torch.equal(gathered.view(torch.int16), packed.view(torch.int16))),
             "dequant_rel_err": float((deq.float() - w.float()).norm() / w.float().norm()),
             "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
             "trainable_dtypes": sorted({str(p.dtype) for p in model.parameters() if p.requires_grad})}
opt = recipe.build_optimizer(model, opts)
losses = []
for _ in range(3):
    ids = recipe.random_batch(spec.arch.vocab_size, opts, "cpu")
    losses.append(recipe.train_step(model, opt, ids, opts, "cpu"))
Path(sys.argv[2], f"rank{dist.get_rank()}.json").write_text(json.dumps({"rank": dist.get_rank(), "local": local, "full": full, "meta_left": meta_left,
                  "inv_freq_ok": bool(inv_freq) and all(torch.isfinite(b).all() and (b > 0).all() for b in inv_freq),
                  "losses": losses, "fsdp_modules": sum(type(m).__name__.startswith("FSDP") for m in model.modules()),
                  **extra}))
dist.destroy_process_group()
