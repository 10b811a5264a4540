"""Run every scenario that the seed guides price through ftcalc and print the answers as markdown.

    python scripts/seed_scenarios.py > /tmp/seed-answers.md     # the figures of docs/seed-scenarios.md

Each query is an ``ftcalc recommend`` call (ftcalc.solver.search.recommend) written out as its command line.
Where a guide gives a number of examples but no length, the query says what length it assumes: that
is an input, not a claim. Re-run after the coefficients, the price table or the solver change, and
update docs/seed-scenarios.md from the output.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ftcalc.errors import FtcalcError  # noqa: E402
from ftcalc.solver.search import recommend  # noqa: E402

GIB = 2**30
L3_8, L3_70 = "meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-70B"
L31_8, L31_70 = "meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B"
M7, Q14 = "mistralai/Mistral-7B-v0.3", "Qwen/Qwen2.5-14B"
TENK = dict(examples=10_000, avg_tokens=512, epochs=3)  # seeds 000/003: "10K samples"; 3 epochs in their configs
FIFTYK = dict(examples=50_000, avg_tokens=512, epochs=3)

# (id, query) pairs; the ids are referenced from docs/seed-scenarios.md
QUERIES: list[tuple[str, dict]] = [
    # seeds/000 Saturn Cloud
    ("000-A", dict(model=L3_8, method="qlora", **TENK, gpu="h100", provider="saturn-cloud", max_gpus=1, global_batch_size=8)),
    ("000-B1", dict(model=L3_70, method="qlora", **TENK, gpu="h100", provider="saturn-cloud", max_gpus=1)),
    ("000-B4", dict(model=L3_70, method="qlora", **TENK, gpu="h100", provider="runpod", max_gpus=4, top=3)),
    ("000-C4", dict(model=L3_70, method="full", **TENK, gpu="h100", max_gpus=4, top=2)),
    ("000-C2", dict(model=L3_70, method="full", **TENK, gpu="h200", max_gpus=2, top=2)),
    ("000-C8", dict(model=L3_70, method="full", **TENK, gpu="h200", max_gpus=8, top=2)),
    # seeds/001 GPU-pricing guide (RunPod prices, March 2026)
    ("001-S1-4090", dict(model=L31_8, method="lora", dataset_tokens=100_000_000, gpu="rtx-4090", provider="runpod", max_gpus=1)),
    ("001-S1-A100", dict(model=L31_8, method="lora", dataset_tokens=100_000_000, gpu="a100-80gb-sxm", provider="runpod", max_gpus=1)),
    ("001-S2-4090", dict(model=L31_70, method="qlora", dataset_tokens=500_000_000, gpu="rtx-4090", provider="runpod", max_gpus=1)),
    ("001-S2-A100", dict(model=L31_70, method="qlora", dataset_tokens=500_000_000, gpu="a100-80gb-sxm", provider="runpod", max_gpus=1)),
    ("001-S3-A100", dict(model=L31_70, method="full", dataset_tokens=2_000_000_000, gpu="a100-80gb-sxm", provider="runpod", max_gpus=1)),
    ("001-S3-A100x16", dict(model=L31_70, method="full", dataset_tokens=2_000_000_000, gpu="a100-80gb-sxm", provider="runpod", max_gpus=16)),
    ("001-S3-H100x16", dict(model=L31_70, method="full", dataset_tokens=2_000_000_000, gpu="h100", provider="runpod", max_gpus=16)),
    ("001-1000steps-4090", dict(model=L31_8, method="lora", dataset_tokens=1000 * 4 * 2048, gpu="rtx-4090", provider="runpod", max_gpus=1, global_batch_size=4)),
    ("001-1000steps-70b-4090", dict(model=L31_70, method="qlora", dataset_tokens=1000 * 1 * 1024, seq_len=1024, gpu="rtx-4090", provider="runpod", max_gpus=1, global_batch_size=1)),
    ("001-2xA100", dict(model=L31_8, method="lora", dataset_tokens=100_000_000, gpu="a100-80gb-sxm", provider="runpod", max_gpus=2, objective="time", top=1)),
    # seeds/002 Lyceum: memory claims only (no prices); the 48 GB single-GPU claim for 70B QLoRA
    ("002-48GB", dict(model=L31_70, method="qlora", **TENK, gpu=["l40s", "rtx-6000-ada"], max_gpus=1)),
    ("002-48GBx2", dict(model=L31_70, method="qlora", **TENK, gpu=["l40s", "rtx-6000-ada"], max_gpus=2, top=2)),
    # seeds/003 io.net: the GPU-requirements table (minimum GPU), then the four priced scenarios
    ("003-T-full7", dict(model=M7, method="full", **TENK, gpu="a100-80gb-sxm", max_gpus=2, top=1)),
    ("003-T-full13", dict(model=Q14, method="full", **TENK, gpu="a100-80gb-sxm", max_gpus=4, top=1)),
    ("003-T-full70", dict(model=L31_70, method="full", **TENK, gpu="h100", max_gpus=8, top=1)),
    ("003-T-lora7", dict(model=M7, method="lora", **TENK, gpu="rtx-4090", max_gpus=1, top=1)),
    ("003-T-lora13", dict(model=Q14, method="lora", **TENK, gpu="a100-40gb-sxm", max_gpus=1, top=1)),
    ("003-T-lora70", dict(model=L31_70, method="lora", **TENK, gpu="a100-80gb-sxm", max_gpus=2, top=1)),
    ("003-T-qlora7", dict(model=M7, method="qlora", **TENK, gpu="rtx-4090", max_gpus=1, top=1)),
    ("003-T-qlora13", dict(model=Q14, method="qlora", **TENK, gpu="rtx-4090", max_gpus=1, top=1)),
    ("003-T-qlora70", dict(model=L31_70, method="qlora", **TENK, gpu="a100-80gb-sxm", max_gpus=1, top=1)),
    ("003-S1", dict(model=L3_8, method="qlora", **TENK, gpu="rtx-4090", provider=["ionet", "runpod", "vastai"], max_gpus=1, top=3)),
    ("003-S1-spot", dict(model=L3_8, method="qlora", **TENK, gpu="rtx-4090", provider="vastai", spot=True, max_gpus=1, top=1)),
    ("003-S2", dict(model=L3_8, method="lora", **TENK, gpu="a100-80gb-sxm", provider=["ionet", "lambda", "runpod", "coreweave", "aws"], max_gpus=1, top=5)),
    ("003-S2-40GB", dict(model=L3_8, method="lora", **TENK, gpu="a100-40gb-sxm", provider=["aws", "gcp"], max_gpus=1, top=2)),
    ("003-S3", dict(model=L3_70, method="qlora", **TENK, gpu="a100-80gb-sxm", provider=["ionet", "lambda", "runpod", "aws"], max_gpus=1, top=4)),
    ("003-S4", dict(model=L3_70, method="full", **FIFTYK, gpu="h100", provider=["ionet", "lambda", "runpod", "coreweave", "aws"], max_gpus=8, top=5)),
    ("003-S4-H200", dict(model=L3_70, method="full", **FIFTYK, gpu="h200", max_gpus=8, top=2)),
    # seeds/004 Deploybase (2025-04-08), RunPod / CoreWeave prices; "1,000-5,000 examples"
    ("004-8B-LoRA", dict(model=L3_8, method="lora", examples=5_000, avg_tokens=512, epochs=3, gpu="a100-80gb-pcie", provider="runpod", max_gpus=1)),
    ("004-70B-LoRA-1xH100", dict(model=L3_70, method="lora", examples=5_000, avg_tokens=512, epochs=3, gpu="h100", provider="runpod", max_gpus=1)),
    ("004-70B-LoRA-H100", dict(model=L3_70, method="lora", examples=5_000, avg_tokens=512, epochs=3, gpu="h100", provider="runpod", max_gpus=8, top=2)),
    ("004-70B-QLoRA-A100", dict(model=L3_70, method="qlora", examples=5_000, avg_tokens=512, epochs=3, gpu="a100-80gb-pcie", provider="runpod", max_gpus=1)),
    ("004-70B-full-8xA100", dict(model=L3_70, method="full", examples=5_000, avg_tokens=512, epochs=3, gpu="a100-80gb-sxm", provider="coreweave", max_gpus=8)),
]


def command(kw: dict) -> str:
    flags = []
    for key, value in kw.items():
        if key == "global_batch_size":
            key = "global-batch"
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
            continue
        for v in value if isinstance(value, list) else [value]:
            if key == "dataset_tokens":
                v = f"{v / 1e6:g}M"
            flags.append(f"{flag} {v}")
    return "ftcalc recommend " + " ".join(flags)


def answer(kw: dict) -> list[str]:
    try:
        rec = recommend(**kw)
    except FtcalcError as e:
        return [f"error ({type(e).__name__}): {e}"]
    lines = []
    for p in rec.plans:
        paid = f" of {p.gpus_paid}" if p.gpus_paid > p.num_gpus else ""
        lines.append(
            f"{p.rank}. {p.num_gpus}{paid}x {p.gpu} at {p.provider} {p.instance_type} (${p.usd_per_hour:g}/h, {p.basis}); "
            f"{p.method} mb {p.micro_batch_size} x ga {p.grad_accum}, ckpt {'on' if p.gradient_checkpointing else 'off'}, "
            f"{p.sharding}; {p.device_used_bytes / GIB:.1f} GiB/GPU of {p.gpu_memory_bytes / GIB:.1f}; "
            f"{p.tokens_per_second:,.0f} tokens/s ({p.tokens_per_second_per_gpu:,.0f}/GPU, scaling {p.scaling_efficiency:.2f}); "
            f"{rec.dataset_tokens * rec.epochs / 1e6:,.1f}M tokens in {p.est_hours:,.2f} h "
            f"(start-up {p.startup_hours:.2f} h); ${p.est_cost_usd:,.2f}")
    for r in rec.rejected:
        lines.append(f"left out: {r.reason}")
    return lines


def main() -> int:
    for qid, kw in QUERIES:
        print(f"### {qid}\n\n`{command(kw)}`\n")
        for line in answer(kw):
            print(f"- {line}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
