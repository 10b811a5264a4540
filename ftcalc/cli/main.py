"""The ``ftcalc`` command line: thin parsing over the library, table or ``--json`` output.

    ftcalc estimate --model 8b --method qlora --seq-len 4096 --batch-size 2 --gpu h100
    ftcalc models | ftcalc gpus | ftcalc inventory --model 70b
    ftcalc profile ... --steps 6 --record      (CUDA GPU, [train] extra)
    ftcalc calibrate | ftcalc validate --json

Errors the user can cause print one line on stderr and exit with code 2. Heavy modules are imported
inside the command that needs them.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import Any

from ftcalc.cli.common import (
    add_coefficients_flag,
    bool_flag,
    parse_tokens_flag,
    run_with_errors,
)
from ftcalc.sizes import GB, GIB


def _add_training_options(p: argparse.ArgumentParser, model_required: bool = True) -> None:
    from ftcalc.model.options import ATTENTIONS, DEFAULTS, OPTIMIZERS, PRECISIONS

    p.add_argument("--model", required=model_required, help="catalog id or alias (see `ftcalc models`), a config.json path or folder, or a hub id")
    p.add_argument("--method", choices=["full", "lora", "qlora"], default="lora", help="fine-tuning method (default lora)")
    p.add_argument("--seq-len", type=int, default=2048, help="tokens per sequence (default 2048)")
    p.add_argument("--batch-size", type=int, default=1, help="micro-batch size per GPU (default 1)")
    p.add_argument("--gradient-accumulation-steps", type=int, default=1,
                   help="micro-batches per optimizer step (default 1); gradients stay alive between them")
    bool_flag(p, "gradient-checkpointing", "recompute activations in backward (default: on for lora/qlora, off for full)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw_torch", help="default adamw_torch (foreach)")
    p.add_argument("--precision", choices=PRECISIONS, default="bf16-true",
                   help="bf16-true: bf16 weights + bf16 autocast; bf16-mixed: fp32 master weights + autocast; 32-true")
    p.add_argument("--lora-r", type=int, default=DEFAULTS.lora_r)
    p.add_argument("--lora-alpha", type=float, default=DEFAULTS.lora_alpha)
    p.add_argument("--lora-dropout", type=float, default=DEFAULTS.lora_dropout)
    p.add_argument("--lora-targets", default="all-linear", help="all-linear or a comma list such as q_proj,v_proj")
    p.add_argument("--attention", choices=ATTENTIONS, default="auto", help="auto: what transformers selects for the model")
    p.add_argument("--loss", choices=["standard", "fused"], default="standard",
                   help="standard: HF causal-LM loss (fp32 logits); fused: Liger fused linear cross-entropy")
    p.add_argument("--num-gpus", type=int, default=1,
                   help="GPUs of one node, data parallel: estimate adds the per-GPU memory under DDP (LoRA, QLoRA) "
                        "or FSDP (full fine-tuning, LoRA too big for DDP); profile runs torchrun")


def _options_from_args(a: argparse.Namespace) -> Any:
    from ftcalc.model.options import make_options

    return make_options(method=a.method, seq_len=a.seq_len, batch_size=a.batch_size,
                        gradient_accumulation_steps=a.gradient_accumulation_steps,
                        gradient_checkpointing=a.gradient_checkpointing, optimizer=a.optimizer,
                        precision=a.precision, lora_r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=a.lora_dropout,
                        lora_targets=a.lora_targets, attention=a.attention, loss=a.loss, num_gpus=a.num_gpus)


def _fmt_bytes(b: float) -> str:
    return f"{b / GIB:8.2f} GiB {b / GB:8.2f} GB"


def _print_estimate(est: Any) -> None:
    print(f"{est.model}  {est.method}  seq {est.seq_len} x batch {est.batch_size}")
    print(f"{est.precision}, {est.optimizer}, checkpointing {'on' if est.gradient_checkpointing else 'off'}, "
          f"attention {est.attention}, loss {est.loss}")
    print(f"params: {est.total_params / 1e9:.2f} B total, {est.trainable_params / 1e6:.1f} M trainable")
    if est.quantization:
        print(f"pre-quantized checkpoint: {est.quantization}")
    if est.unvalidated:
        print(f"unvalidated: {'; '.join(est.unvalidated)}")
    print()
    print(f"{'component':28s} {'GiB':>12s} {'GB':>11s}")
    for k, v in est.breakdown.items():
        if v:
            print(f"{k:28s} {_fmt_bytes(v)}")
    print("-" * 53)
    print(f"{'peak allocated':28s} {_fmt_bytes(est.peak_allocated_bytes)}  ({est.peak_phase.replace('_', ' ')})")
    print(f"{'peak reserved':28s} {_fmt_bytes(est.peak_reserved_bytes)}")
    print(f"{'device used (nvidia-smi)':28s} {_fmt_bytes(est.device_used_bytes)}")
    if est.distribution:
        how = est.distribution.upper() + (", sharded QLoRA" if est.method == "qlora"
                                          and est.distribution.startswith("fsdp") else "")
        print(f"\non {est.num_gpus} GPUs with {how} (docs/multi-gpu.md), per GPU:")
        print(f"{'  peak allocated':28s} {_fmt_bytes(est.per_gpu_peak_allocated_bytes)}")
        print(f"{'  device used':28s} {_fmt_bytes(est.per_gpu_device_used_bytes)}")
    if est.gpu:
        if not est.fits:
            verdict = f"DOES NOT FIT, headroom {est.headroom_bytes / GIB:+.2f} GiB"
        elif est.headroom_bytes < 0:  # fits only because the capped pool frees cached blocks (estimator)
            verdict = (f"fits only near the limit: the unconstrained pool would exceed it by "
                       f"{-est.headroom_bytes / GIB:.2f} GiB")
        else:
            verdict = f"fits, headroom {est.headroom_bytes / GIB:+.2f} GiB"
        print(f"\n{est.gpu} ({est.gpu_memory_bytes / GIB:.1f} GiB): {verdict}")
        if est.fit_note:
            print(f"  {est.fit_note}")
        if est.tokens_per_second:
            line = f"throughput: {est.tokens_per_second:,.0f} tokens/s per GPU"
            if est.hours is not None:
                line += f"; {est.dataset_tokens / 1e6:,.0f}M tokens -> {est.hours:.2f} h"
            print(line)
            from ftcalc.model.throughput import host_note

            note = host_note(est.host_launch_ratio)
            if note:
                print(textwrap.fill(note, 80, initial_indent="  ", subsequent_indent="  "))
    print(f"\ncoefficients: {est.coefficients}")
    print(f"  from {est.coefficients_file}")
    if est.unvalidated:
        print("\nunvalidated (no GPU measurement of these parts):")
        for part in est.unvalidated:
            print(textwrap.fill(part, 80, initial_indent="  - ", subsequent_indent="    "))


def _model_and_options(a: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(model spec, options, trainer config or None): from the flags, or from ``--from FILE`` with flags on top."""
    from ftcalc.tables.catalog import resolve_model

    if getattr(a, "from_files", None):
        from ftcalc.integrations.from_flag import options_from_args

        return options_from_args(a)
    if not a.model:
        from ftcalc.errors import InvalidArgumentError

        raise InvalidArgumentError("--model is required (or --from FILE, a trainer's config that names the model)")
    return resolve_model(a.model), _options_from_args(a), None


def cmd_estimate(a: argparse.Namespace) -> int:
    from ftcalc.errors import InvalidArgumentError
    from ftcalc.model.estimator import estimate_options

    if a.check and not a.gpu:
        raise InvalidArgumentError("--check needs --gpu: the GPU to test the fit on (see `ftcalc gpus`)")
    if a.plot:  # before any work: the extra, and a path that may be written
        from ftcalc.extras import require_extra
        from ftcalc.safe_write import PLOT_FORMATS, PLOT_MARKERS, check_output

        require_extra("plot", "--plot")
        check_output(a.plot, marker=PLOT_MARKERS, inputs=[a.model, *(getattr(a, "from_files", None) or [])],
                     force=a.force, what="plot", suffixes=PLOT_FORMATS)
    spec, opts, tc = _model_and_options(a)
    est = estimate_options(spec, opts, gpu=a.gpu, dataset_tokens=a.dataset_tokens, epochs=a.epochs)
    if a.plot:
        from ftcalc.viz.plots import plot_breakdown, save

        save(plot_breakdown([est], gpus=[est.gpu] if est.gpu else None), a.plot, force=a.force, inputs=(a.model,))
    if est.fits is False:  # a run that would not start has no speed or duration to print
        est = est.model_copy(update={"tokens_per_second": None, "hours": None, "host_launch_ratio": None})
    if a.json:
        print(json.dumps({**est.to_dict(), **({"from_config": tc.to_dict()} if tc else {})}, indent=2))
    else:
        if tc:
            from ftcalc.integrations.from_flag import print_from_report

            print_from_report(tc)
        _print_estimate(est)
        if a.plot:
            print(f"plot written to {a.plot}")
    if a.check and not est.fits:
        print(f"ftcalc: does not fit on {est.gpu}: {est.fit_note}", file=sys.stderr)
        return 1
    return 0


def cmd_fit(a: argparse.Namespace) -> int:
    from ftcalc.errors import InvalidArgumentError
    from ftcalc.model.fit import max_fit, min_gpu

    spec, opts, tc = _model_and_options(a)
    model = spec if tc else a.model
    if tc and not a.json:
        from ftcalc.integrations.from_flag import print_from_report

        print_from_report(tc)
    if bool(a.maximize) == bool(a.minimize):
        raise InvalidArgumentError("give exactly one of --maximize {seq-len,batch-size,lora-r} or --minimize gpu")
    if a.maximize:
        if not a.gpu:
            raise InvalidArgumentError("--maximize needs --gpu (see `ftcalc gpus`)")
        r = max_fit(model, opts, a.gpu, a.maximize, headroom=a.headroom)
        if a.json:
            print(json.dumps(r.to_dict(), indent=2))
            return 0
        print(f"{r.model} {r.method} on {r.gpu} ({r.gpu_memory_bytes / GIB:.1f} GiB, {r.headroom:.0%} headroom):")
        print(f"  largest {r.target}: {r.best.value}  -> {r.best.device_used_bytes / GIB:.3f} GiB "
              f"(largest part: {r.best.dominant_component})")
        if r.next_step:
            print(f"  {r.target} {r.next_step.value}: {r.next_step.device_used_bytes / GIB:.3f} GiB, does not fit")
        print(f"  limited by {r.limit_reason}")
        return 0
    r = min_gpu(model, opts, headroom=a.headroom, max_gpus=a.max_gpus)
    if a.json:
        print(json.dumps(r.to_dict(), indent=2))
        return 0
    need = r.single_gpu_device_used_bytes
    print(f"{r.model} {r.method} seq {r.seq_len} x batch {r.batch_size} needs {need / GIB:.2f} GiB on one GPU")
    for g in r.fitting:
        how = f"{g.num_gpus}x fsdp" if g.sharding == "fsdp" else "1x"
        print(f"  fits  {how:8s} {g.gpu:16s} {g.gpu_memory_bytes / GIB:6.1f} GiB  "
              f"{g.device_used_bytes / GIB:7.2f} GiB/GPU, headroom {g.headroom_bytes / GIB:+7.2f} GiB")
    if any(g.sharding == "fsdp" for g in r.fitting):
        print("  (multi-GPU figures: FSDP full-shard, validated on 2x, 4x and 8xH200 only: docs/multi-gpu.md)")
    if not r.fitting:
        from ftcalc.errors import DoesNotFitError

        raise DoesNotFitError(f"no GPU in the table holds {need / GIB:.1f} GiB, even {a.max_gpus} of them with FSDP; "
                              f"the largest is {r.not_fitting[-1].gpu} ({r.not_fitting[-1].gpu_memory_bytes / GIB:.0f} GiB)")
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from ftcalc.extras import require_extra
    from ftcalc.viz.report import write_report

    require_extra("plot", "ftcalc report")
    paths = write_report(a.model, a.method, a.dataset_tokens, a.output, seq_len=a.seq_len, epochs=a.epochs,
                         gpus=a.gpu, force=a.force, top=a.top)
    if a.json:
        print(json.dumps([str(p) for p in paths]))
    else:
        for p in paths:
            print(f"wrote {p}")
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    from ftcalc.tables.catalog import list_models
    from ftcalc.tables.inventory import inventory

    rows = []
    for m in list_models():
        if a.filter and a.filter.lower() not in (m.id + " " + " ".join(m.aliases)).lower():
            continue
        inv = inventory(m.arch)
        rows.append({"id": m.id, "aliases": list(m.aliases), "model_type": m.arch.model_type,
                     "params": inv.total_params, "layers": m.arch.num_layers, "hidden": m.arch.hidden_size,
                     "vocab": m.arch.vocab_size, "context": m.arch.max_position_embeddings,
                     "tied_embeddings": m.arch.tie_word_embeddings})
    if a.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'id':36s} {'params':>8s} {'vocab':>7s} {'ctx':>7s}  alias")
    for r in rows:
        alias = min(r["aliases"], key=len) if r["aliases"] else ""
        print(f"{r['id'][:36]:36s} {r['params'] / 1e9:7.2f}B {r['vocab']:7d} {r['context']:7d}  {alias[:16]}")
    return 0


def _raw_config(name: str) -> tuple[str, dict[str, Any]]:
    """(id, config dict) of a local config.json / model folder, or of a catalog or hub model, without the
    analytic parse (which knows a fixed set of model_types)."""
    from pathlib import Path

    from ftcalc.errors import UnknownModelError
    from ftcalc.tables.catalog import resolve_model
    from ftcalc.validation import read_json_file

    path = Path(name).expanduser()
    if path.suffix == ".json" or path.exists() or name.startswith((".", "/", "~")):
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise UnknownModelError(f"{path}: no such config.json")
        return str(path), read_json_file(path, "config.json")
    spec = resolve_model(name)
    return spec.id, spec.config


def cmd_inventory(a: argparse.Namespace) -> int:
    from ftcalc.tables.catalog import resolve_model
    from ftcalc.tables.inventory import exact_inventory, inventory

    if a.exact:
        from ftcalc.extras import require_extra

        require_extra("train", "ftcalc inventory --exact")
    if a.exact:  # any model_type transformers builds: the raw config, not the analytic Architecture
        model_id, config = _raw_config(a.model)
        inv = exact_inventory(config, where=model_id)
    else:
        spec = resolve_model(a.model)
        model_id, inv = spec.id, inventory(spec.arch)
    if a.json:
        print(json.dumps(inv.to_dict(), indent=2))
        return 0
    print(f"{model_id} ({inv.source}): {inv.total_params:,} parameters")
    for k, v in inv.params_by_kind.items():
        if v:
            print(f"  {k:14s} {v:>16,}")
    print("decoder Linear layers (LoRA targets / 4-bit under QLoRA):")
    for g in inv.linears:
        print(f"  {g.kind:14s} {g.in_features:>6} -> {g.out_features:<6} x{g.count}{'  +bias' if g.bias else ''}")
    _print_wrapper_parts(spec.arch)
    return 0


def _print_wrapper_parts(arch: Any) -> None:
    """What the language model's inventory above leaves out: a multimodal wrapper's vision part, a checkpoint's
    quantization."""
    if arch.vision is not None:
        v = arch.vision
        print(f"vision tower + projector ({v.family}): {v.params:,} parameters more "
              f"({v.tower_params:,} + {v.projector_params:,}; not in the language model's count above)")
    if arch.quantization is not None:
        print(f"pre-quantized checkpoint: {arch.quantization.label}")


def cmd_gpus(a: argparse.Namespace) -> int:
    from ftcalc.tables.hardware import load_gpus

    gpus = [g for g in load_gpus().values()
            if (not a.filter or a.filter.lower() in f"{g.gpu} {g.name} {' '.join(g.aliases)}".lower())
            and g.memory_bytes >= (a.min_memory_gib or 0) * GIB]
    if a.json:
        print(json.dumps([{k: getattr(g, k) for k in g.__dataclass_fields__} for g in gpus], indent=2, default=list))
        return 0
    print(f"{'gpu':16s} {'memory':>10s} {'bf16 TF':>8s} {'GB/s':>6s}  link")
    for g in gpus:
        print(f"{g.gpu:16s} {g.memory_bytes / GIB:6.1f} GiB {g.bf16_dense_tflops:8.0f} {g.memory_bandwidth_gbps:6.0f}  {g.interconnect}")
    return 0


def cmd_prices(a: argparse.Namespace) -> int:
    from ftcalc.tables.pricing import prices_dataframe

    df = prices_dataframe(provider=a.provider, gpu=a.gpu) if (a.provider or a.gpu) else prices_dataframe()
    if a.json:
        print(df.to_json(orient="records", indent=2))
    else:
        print(f"{'provider':12s} {'instance':26s} {'gpu':14s} {'GPUs':>4s} {'$/h':>8s} {'spot $/h':>9s}")
        for _, r in df.iterrows():
            spot = r.get("spot_usd_per_hour")
            od = r.get("on_demand_usd_per_hour")
            print(f"{str(r['provider'])[:12]:12s} {str(r['instance_type'])[:26]:26s} {str(r['gpu'])[:14]:14s} "
                  f"{int(r['gpus_per_instance']):4d} {(f'{od:8.2f}' if od == od and od is not None else '       -')} "
                  f"{(f'{spot:9.2f}' if spot == spot and spot is not None else '        -')}")
        print("prices per instance per hour, USD; sources and dates: data/prices.csv")
    return 0


def cmd_profile(a: argparse.Namespace) -> int:
    from ftcalc.errors import InvalidArgumentError
    from ftcalc.extras import require_extra

    require_extra("train", "ftcalc profile")
    from ftcalc.measure.profile import profile, profile_multi_gpu, record_rows

    opts = _options_from_args(a)
    if a.record:
        from ftcalc.train.records import check_record_file

        check_record_file(a.record_file)
    if a.cpu_offload and (opts.num_gpus < 2 or opts.method == "qlora"):
        raise InvalidArgumentError("--cpu-offload is FSDP's CPU offload: it needs --num-gpus 2 or more and full "
                                   "fine-tuning or LoRA (the recipe does not offload QLoRA)")
    if opts.num_gpus > 1:  # torchrun, one process per GPU (ftcalc/measure/profile_dist.py)
        distribution = a.distribution or ("fsdp" if opts.method == "full" or a.cpu_offload else "ddp")
        if a.cpu_offload and distribution != "fsdp":
            raise InvalidArgumentError("--cpu-offload is FSDP's CPU offload: use it with --distribution fsdp")
        row = profile_multi_gpu(a.model, opts, distribution, steps=a.steps, warmup_steps=a.warmup_steps,
                                offload_params=a.cpu_offload)
    else:
        row = profile(a.model, opts, steps=a.steps, warmup_steps=a.warmup_steps)
    if a.record:
        path = record_rows([row], a.record_file)
        print(f"recorded in {path}", file=sys.stderr)
    if a.json:
        print(json.dumps(row, indent=2))
    else:
        for k in ("outcome", "gpu_name", "peak_allocated_bytes", "peak_reserved_bytes", "device_used_bytes",
                  "tokens_per_second", "num_alloc_retries", "error"):
            v = row.get(k)
            print(f"{k:24s} {(_fmt_bytes(v) if k.endswith('_bytes') and v else v)}")
    return 0 if row.get("outcome") in ("ok", "oom") else 1


def cmd_calibrate(a: argparse.Namespace) -> int:
    from ftcalc.cli.measure import run_calibrate

    return run_calibrate(a)


def cmd_validate(a: argparse.Namespace) -> int:
    from ftcalc.cli.measure import run_validate

    return run_validate(a)


class _OneLineErrors(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _OneLineErrors(prog="ftcalc", description="GPU memory, time and cost planner for LLM fine-tuning")
    from ftcalc._version import __version__

    p.add_argument("--version", action="version", version=f"ftcalc {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from ftcalc.integrations.from_flag import add_from_argument, track_explicit_flags

    e = sub.add_parser("estimate", help="memory (and speed on a GPU) of one configuration")
    _add_training_options(e, model_required=False)
    add_from_argument(e)
    e.add_argument("--gpu", help="GPU slug or alias (h100, h200, a100-80gb, rtx-4090, ...; see `ftcalc gpus`)")
    e.add_argument("--dataset-tokens", type=parse_tokens_flag, help="tokens to train on (100M, 2.5B): adds hours")
    e.add_argument("--epochs", type=float, default=1.0)
    e.add_argument("--json", action="store_true", help="one JSON object")
    add_coefficients_flag(e)
    e.add_argument("--plot", help="write the memory breakdown as a stacked bar chart (PNG, SVG or PDF; [plot] extra)")
    e.add_argument("--force", action="store_true", help="replace an existing --plot file that ftcalc did not write")
    e.add_argument("--check", action="store_true",
                   help="with --gpu: exit 1 with a one-line reason on stderr when it does not fit (2 stays for bad input)")
    e.set_defaults(func=cmd_estimate)
    track_explicit_flags(e)

    ft = sub.add_parser("fit", help="the most that fits on a GPU (--maximize), or the smallest GPU (--minimize gpu)")
    _add_training_options(ft, model_required=False)
    add_from_argument(ft)
    ft.add_argument("--gpu", help="GPU for --maximize")
    ft.add_argument("--maximize", choices=["seq-len", "batch-size", "lora-r"])
    ft.add_argument("--minimize", choices=["gpu"])
    ft.add_argument("--headroom", type=float, default=0.05, help="share of GPU memory kept free (default 0.05)")
    ft.add_argument("--max-gpus", type=int, default=8, help="--minimize gpu: most GPUs of one type, FSDP (default 8)")
    ft.add_argument("--json", action="store_true")
    add_coefficients_flag(ft)
    ft.set_defaults(func=cmd_fit)
    track_explicit_flags(ft)

    rp = sub.add_parser("report", help="write a capacity-planning report (Markdown + HTML + plots)")
    rp.add_argument("--model", required=True)
    rp.add_argument("--method", choices=["full", "lora", "qlora", "auto"], default="lora")
    rp.add_argument("--dataset-tokens", type=parse_tokens_flag,
                    help="tokens per epoch: 100M, 2.5B (without it, plans are ranked per million tokens)")
    rp.add_argument("--epochs", type=float, default=1.0)
    rp.add_argument("--seq-len", type=int, default=2048)
    rp.add_argument("--gpu", action="append", help="GPUs for the one-GPU table (repeat); default a common set")
    rp.add_argument("--top", type=int, default=5)
    rp.add_argument("-o", "--output", required=True, help="report.md (report.html and report_files/ beside it)")
    rp.add_argument("--force", action="store_true", help="overwrite an existing report")
    rp.add_argument("--json", action="store_true", help="print the written paths as JSON")
    rp.set_defaults(func=cmd_report)

    m = sub.add_parser("models", help="list the model catalog")
    m.add_argument("--filter", help="substring of id or alias")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=cmd_models)

    i = sub.add_parser("inventory", help="parameters by module kind")
    i.add_argument("--model", required=True)
    i.add_argument("--exact", action="store_true", help="count on accelerate's meta device (needs [train])")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_inventory)

    g = sub.add_parser("gpus", help="list the GPU table")
    g.add_argument("--filter", help="substring of slug, name or alias (h100, a100, nvidia)")
    g.add_argument("--min-memory-gib", type=float, help="only GPUs with at least this much memory (GiB)")
    g.add_argument("--json", action="store_true")
    g.set_defaults(func=cmd_gpus)

    pr = sub.add_parser("prices", help="list the price table")
    pr.add_argument("--provider")
    pr.add_argument("--gpu")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=cmd_prices)

    f = sub.add_parser("profile", help="measure a real run on this machine's CUDA GPU ([train] extra)")
    _add_training_options(f)
    f.add_argument("--steps", type=int, default=6, help="training steps (default 6)")
    f.add_argument("--warmup-steps", type=int, default=2, help="steps left out of the timing (default 2)")
    f.add_argument("--distribution", choices=["ddp", "fsdp"],
                   help="with --num-gpus > 1: DDP or FSDP2 (default: fsdp for full fine-tuning, else ddp)")
    f.add_argument("--cpu-offload", action="store_true",
                   help="with FSDP: keep parameters, gradients and optimizer states in host memory (FSDP2 CPU offload)")
    f.add_argument("--record", action="store_true", help="append the row to the measurement database")
    f.add_argument("--record-file", help="JSONL file to append to (default data/measurements/runs-user.jsonl in a checkout, else the user data folder)")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=cmd_profile)

    c = sub.add_parser("calibrate", help="fit the coefficients on the fit runs; write coefficients.json to --out")
    c.add_argument("--measurements", help="folder of *.jsonl rows (default data/measurements)")
    c.add_argument("--out", metavar="DIR", help="folder for coefficients.json and calibration_report.md (default "
                                                "$XDG_DATA_HOME/ftcalc or ~/.local/share/ftcalc; never the package)")
    c.add_argument("--output", help="coefficients file to write (default OUT/coefficients.json)")
    c.add_argument("--report", help="fit report to write (default OUT/calibration_report.md)")
    c.add_argument("--force", action="store_true", help="replace existing files that ftcalc did not write")
    c.add_argument("--json", action="store_true", help="print the coefficients and error summaries as JSON")
    c.set_defaults(func=cmd_calibrate)

    v = sub.add_parser("validate", help="predicted vs measured on the held-out validation runs")
    v.add_argument("--measurements", help="folder of *.jsonl rows (default data/measurements)")
    v.add_argument("--all", action="store_true", help="every usable run, fit runs included")
    v.add_argument("--multi-gpu", action="store_true",
                   help="the runs on several GPUs (DDP, FSDP): per-GPU memory and tokens/s (docs/multi-gpu.md)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_validate)

    from ftcalc.cli.recommend import add_recommend_parser

    add_coefficients_flag(add_recommend_parser(sub))

    from ftcalc.cli.train import add_plan_parser, add_run_parser, add_schema_parser

    add_plan_parser(sub)
    add_run_parser(sub)
    add_schema_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    return run_with_errors(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
