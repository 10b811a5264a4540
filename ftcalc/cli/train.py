"""The ``plan``, ``run`` and ``schema`` subcommands (wired into ftcalc/cli/main.py's parser).

    ftcalc plan --model tiny-llama --method qlora --dataset data/samples/alpaca_sample.jsonl \\
        --max-steps 4 --device cpu -o spec.yaml
    ftcalc run spec.yaml --output-dir run/ [--resume] [--force] [--record]
    ftcalc schema > spec.schema.json

Each ``add_*_parser(subparsers)`` adds one subcommand and sets ``func``; the functions import what
they need when called, so ``ftcalc plan`` and ``ftcalc schema`` never import torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ftcalc.cli.common import bool_flag
from ftcalc.sizes import GIB

__all__ = ["add_plan_parser", "add_run_parser", "add_schema_parser", "cmd_plan", "cmd_run", "cmd_schema", "main"]


# --------------------------------------------------------------------------- plan


def add_plan_parser(subparsers: Any) -> argparse.ArgumentParser:
    from ftcalc.model.options import ATTENTIONS, DEFAULTS, OPTIMIZERS, PRECISIONS

    p = subparsers.add_parser("plan", help="write a training spec (with the estimator's prediction) for `ftcalc run`",
                              description="Write a training spec for `ftcalc run`, with the estimator's prediction.")
    g = p.add_argument_group("what to train")
    g.add_argument("--model", help="catalog id or alias (see `ftcalc models`), a config.json folder, or a hub id")
    g.add_argument("--method", choices=["full", "lora", "qlora", "auto"], default="lora",
                   help="default lora; auto (with --from-recommendation): the solver picks")
    g.add_argument("--dataset", help="JSONL file (alpaca, chat or text rows)")
    g.add_argument("--format", dest="data_format", choices=["alpaca", "chat", "text"],
                   help="dataset format (default: from the first line's keys)")
    g.add_argument("--init", choices=["pretrained", "random"],
                   help="default: random for models written for ftcalc (tiny-llama), else pretrained")
    g.add_argument("--tokenizer", help="tokenizer folder or hub id (default: the model's own)")
    g.add_argument("--from-recommendation", type=int, metavar="N",
                   help="take GPU, count, method, batch and sharding from the Nth plan of `ftcalc recommend` "
                        "for this dataset (--gpu, --provider, --spot, --max-gpus and --objective constrain it)")
    g.add_argument("--max-gpus", type=int, default=8, help="with --from-recommendation: most GPUs (default 8)")
    g.add_argument("--objective", choices=["cost", "time"], default="cost", help="with --from-recommendation")
    t = p.add_argument_group("training step (the estimator's options)")
    t.add_argument("--seq-len", "--sequence-len", dest="seq_len", type=int,
                   help="tokens per sequence (default: 99%% of the dataset's rows fit; 2048 with --packing)")
    t.add_argument("--batch-size", "--micro-batch-size", dest="batch_size", type=int, default=1,
                   help="micro-batch size per GPU (default 1)")
    t.add_argument("--grad-accum", "--gradient-accumulation-steps", dest="gradient_accumulation_steps", type=int,
                   default=1, help="micro-batches per optimizer step (default 1)")
    bool_flag(t, "gradient-checkpointing", "recompute activations in backward (default: on for lora/qlora)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw_torch")
    t.add_argument("--precision", choices=PRECISIONS, default="bf16-true")
    t.add_argument("--lora-r", type=int, default=DEFAULTS.lora_r)
    t.add_argument("--lora-alpha", type=float, default=DEFAULTS.lora_alpha)
    t.add_argument("--lora-dropout", type=float, default=DEFAULTS.lora_dropout)
    t.add_argument("--lora-targets", default="all-linear", help="all-linear or a comma list such as q_proj,v_proj")
    t.add_argument("--quant-type", choices=["nf4", "fp4"], default="nf4")
    bool_flag(t, "double-quant", "QLoRA double quantization (default on)", default=True)
    t.add_argument("--attention", choices=ATTENTIONS, default="auto")
    t.add_argument("--loss", choices=["standard", "fused"], default="standard")
    h = p.add_argument_group("schedule and data")
    h.add_argument("--max-steps", type=int, help="optimizer steps (overrides --epochs)")
    h.add_argument("--epochs", dest="num_epochs", type=float, default=1.0)
    h.add_argument("--lr", "--learning-rate", dest="learning_rate", type=float,
                   help="default 2e-4 for lora/qlora, 2e-5 for full")
    h.add_argument("--lr-scheduler", choices=["linear", "cosine", "constant", "constant_with_warmup"], default="cosine")
    h.add_argument("--warmup-steps", type=int, default=0)
    h.add_argument("--val-set-size", type=float, default=0.0, help="validation split: fraction (<1) or rows (>=1)")
    bool_flag(h, "packing", "pack examples into full sequences (sample_packing; default off, on with "
                             "--from-recommendation)")
    h.add_argument("--on-bad-line", choices=["error", "skip"], default="error")
    h.add_argument("--train-on", choices=["all", "completion"], default="all",
                   help="all: every token trains (default); completion: only the Alpaca response or the chat's "
                        "assistant turns (TRL completion_only_loss, axolotl train_on_inputs: false)")
    h.add_argument("--seed", type=int, default=42)
    w = p.add_argument_group("hardware and output")
    w.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    w.add_argument("--gpu", help="GPU the prediction is for (adds tokens/s, hours, cost; see `ftcalc gpus`)")
    w.add_argument("--num-gpus", type=int, default=1, help="GPUs per node (default 1)")
    w.add_argument("--num-nodes", type=int, default=1)
    w.add_argument("--distribution", choices=["single", "ddp", "fsdp"],
                   help="default: single on 1 GPU, ddp for lora/qlora and fsdp for full on several")
    w.add_argument("--spot", action="store_true", help="price with spot rates")
    w.add_argument("--provider", help="price at this provider only")
    w.add_argument("--output-dir", default="run", help="the run's folder, relative to the spec (default run)")
    w.add_argument("--save-steps", type=int, help="checkpoint every N steps (default: only on SIGTERM)")
    w.add_argument("--save-total-limit", type=int, default=2)
    bool_flag(w, "merge-adapter", "also save the base model with the adapter merged", default=False)
    p.add_argument("-o", "--output", help="spec file to write (.yaml or .json); default: print YAML")
    p.add_argument("--emit", action="append", choices=["accelerate", "skypilot"], default=[],
                   help="also write accelerate_config.yaml / sky.yaml beside the spec (repeatable; needs -o). "
                        "skypilot also builds this ftcalc's wheel into ftcalc_dist/ and copies an outside dataset "
                        "into ftcalc_data/ (docs/executor.md)")
    p.add_argument("--data-url", help="with --emit skypilot: a bucket folder (s3://, gs://, r2://...) holding the "
                                      "dataset file, mounted on every node instead of copying the file")
    p.add_argument("--checkpoint-url", help="with --emit skypilot: a bucket folder mounted on every node for the "
                                            "run's checkpoints, so a recovered spot job resumes")
    p.add_argument("--json", action="store_true", help="print the spec as JSON")
    p.add_argument("--force", action="store_true",
                   help="replace an existing -o file (or --emit file) that ftcalc did not write as a spec; with "
                        "--emit, also write the task when the estimator predicts the plan does not fit (its header "
                        "then says so)")
    from ftcalc.integrations.from_flag import add_from_argument, track_explicit_flags

    add_from_argument(p)
    p.set_defaults(func=cmd_plan)
    track_explicit_flags(p)
    return p


def cmd_plan(a: argparse.Namespace) -> int:
    from ftcalc.errors import DoesNotFitError, InvalidArgumentError
    from ftcalc.safe_write import SPEC_MARKERS, check_output, write_text
    from ftcalc.train.launch import emit_accelerate_config, emit_skypilot_task
    from ftcalc.train.plan import make_spec
    from ftcalc.train.spec import dump_spec, save_spec

    if getattr(a, "from_files", None):  # a trainer's config as the options; typed flags win
        from ftcalc.integrations.from_flag import apply_to_namespace

        apply_to_namespace(a)
    missing = [f"--{k}" for k in ("model", "dataset") if not getattr(a, k)]
    if missing:
        raise InvalidArgumentError(f"ftcalc plan needs {' and '.join(missing)}")
    inputs = [a.dataset, a.model, a.tokenizer, *(getattr(a, "from_files", None) or [])]
    folder = Path(a.output).parent if a.output else Path(".")
    targets = {"accelerate": folder / "accelerate_config.yaml", "skypilot": folder / "sky.yaml"}
    for path in [a.output] * bool(a.output) + [targets[k] for k in a.emit]:  # before any work
        check_output(path, marker=SPEC_MARKERS, inputs=inputs, force=a.force, what="spec")
    notes: list[str] = []
    spec = make_spec(
        a.model, a.method, a.dataset, out_path=a.output, data_format=a.data_format, max_steps=a.max_steps,
        num_epochs=a.num_epochs, device=a.device, gpu=a.gpu, num_gpus=a.num_gpus, num_nodes=a.num_nodes,
        distribution=a.distribution, seq_len=a.seq_len, batch_size=a.batch_size,
        gradient_accumulation_steps=a.gradient_accumulation_steps, gradient_checkpointing=a.gradient_checkpointing,
        optimizer=a.optimizer, precision=a.precision, lora_r=a.lora_r, lora_alpha=a.lora_alpha,
        lora_dropout=a.lora_dropout, lora_targets=a.lora_targets, attention=a.attention, loss=a.loss,
        quant_type=a.quant_type, double_quant=a.double_quant, init=a.init, tokenizer=a.tokenizer,
        learning_rate=a.learning_rate, lr_scheduler=a.lr_scheduler, warmup_steps=a.warmup_steps,
        val_set_size=a.val_set_size, sample_packing=a.packing, on_bad_line=a.on_bad_line, train_on=a.train_on, output_dir=a.output_dir,
        save_steps=a.save_steps, save_total_limit=a.save_total_limit, merge_adapter=a.merge_adapter, seed=a.seed,
        spot=a.spot, provider=a.provider, from_recommendation=a.from_recommendation, max_gpus=a.max_gpus,
        objective=a.objective, notes=notes,
    )
    emits = list(dict.fromkeys(a.emit))
    if (a.data_url or a.checkpoint_url) and "skypilot" not in emits:
        raise InvalidArgumentError("--data-url and --checkpoint-url are file mounts of the SkyPilot task: add "
                                   "--emit skypilot")
    if emits and not a.output:
        raise InvalidArgumentError("--emit writes its files beside the spec: pass -o SPEC.yaml")
    layout = None
    if emits:
        from ftcalc.train.launch import plan_fits, prepare_workdir

        fits, why = plan_fits(spec, a.model)
        if fits is False and not a.force:
            raise DoesNotFitError(f"the estimator predicts this plan does NOT fit ({why}): no "
                                  f"{' or '.join(emits)} file written; change the plan (ftcalc recommend), or pass "
                                  "--force to write it anyway")
        layout = prepare_workdir(spec, Path(a.output).resolve().parent, data_url=a.data_url,
                                 checkpoint_url=a.checkpoint_url)
        spec = layout.spec  # the spec as every node sees it: paths inside the workdir or on a mount
        notes += layout.notes
        does_not_fit = why if fits is False else None
    if a.output:
        path = save_spec(spec, a.output)
        print(f"wrote {path}", file=sys.stderr)
    else:
        print(dump_spec(spec, "json" if a.json else "yaml"), end="")
    for kind in emits:
        assert layout is not None
        if kind == "accelerate":
            from ftcalc.tables.catalog import resolve_model

            text = emit_accelerate_config(spec, resolve_model(a.model).arch.model_type, spec_name=path.name,
                                          output_dir=layout.output_dir)
        else:
            from ftcalc.train.launch import WHEEL_DIR, build_wheel, setup_script, validated_versions

            wheel = build_wheel(folder / WHEEL_DIR)
            print(f"wrote {wheel}", file=sys.stderr)
            text = emit_skypilot_task(spec, spec_name=path.name,
                                      setup=setup_script(f"{WHEEL_DIR}/{wheel.name}", validated_versions()),
                                      file_mounts=layout.file_mounts, output_dir=layout.output_dir,
                                      does_not_fit=does_not_fit)
        target = write_text(targets[kind], text, marker=SPEC_MARKERS, inputs=inputs, force=a.force, what="spec")
        print(f"wrote {target}", file=sys.stderr)
    _print_summary(spec, notes, a.output)
    return 0


def _print_summary(spec: Any, notes: list[str], out: str | None) -> None:
    p = spec.predicted
    err = sys.stderr
    print(f"{spec.model.base_model} {spec.method}: {p.total_steps} steps x {spec.global_batch_size} sequences x "
          f"{spec.sequence_len} tokens", file=err)
    if p.device_used_bytes:
        print(f"predicted device memory {p.device_used_bytes / GIB:.2f} GiB per GPU "
              f"(peak allocated {p.peak_allocated_bytes / GIB:.2f} GiB)", file=err)
    if p.tokens_per_second:
        cost = f", ${p.cost_usd:,.2f} on {p.provider} {p.instance_type}" if p.cost_usd is not None else ""
        print(f"predicted {p.tokens_per_second:,.0f} tokens/s per GPU on {p.gpu}, {p.hours:.2f} h{cost}", file=err)
    for n in notes:
        print(f"note: {n}", file=err)
    if out:
        print(f"next: ftcalc run {out}   (output in {spec.output.output_dir}/ beside it, or --output-dir DIR)", file=err)


# --------------------------------------------------------------------------- run


def add_run_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("run", help="train what a spec says (transformers + peft; checkpoints, resume)",
                              description="Train what a spec says; writes OUTPUT_DIR/run_report.json.")
    p.add_argument("spec", help="spec file written by `ftcalc plan` (YAML or JSON)")
    p.add_argument("--output-dir", help="where checkpoints, final/ and the report go (default: the spec's output_dir)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --output-dir from its newest complete checkpoint")
    p.add_argument("--force", action="store_true", help="run even if the pre-flight predicts it will not fit")
    p.add_argument("--record", action="store_true", help="append the measurement to the database (CUDA runs)")
    p.add_argument("--record-file", help="JSONL file to append to (default data/measurements/runs-user.jsonl in a checkout, else the user data folder)")
    p.add_argument("--json", action="store_true", help="print the run report as JSON at the end")
    p.set_defaults(func=cmd_run)
    return p


def cmd_run(a: argparse.Namespace) -> int:
    from ftcalc.extras import require_extra

    require_extra("train", "ftcalc run")
    from ftcalc.train.runner import run

    if a.record:
        from ftcalc.train.records import check_record_file

        check_record_file(a.record_file)

    report = run(a.spec, output_dir=a.output_dir, resume=a.resume, force=a.force, record=a.record,
                 record_file=a.record_file)
    if a.json and report:
        print(json.dumps(report, indent=2, default=str))
    return 0


# --------------------------------------------------------------------------- schema


def add_schema_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("schema", help="print the training spec's JSON Schema")
    p.set_defaults(func=cmd_schema)
    return p


def cmd_schema(a: argparse.Namespace) -> int:
    from ftcalc.train.spec import spec_json_schema

    print(json.dumps(spec_json_schema(), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ftcalc.cli.train plan|run|schema ...``: these commands alone, with the CLI's error rules."""
    from ftcalc.cli.common import run_with_errors

    parser = argparse.ArgumentParser(prog="ftcalc")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_plan_parser(sub)
    add_run_parser(sub)
    add_schema_parser(sub)
    return run_with_errors(parser, argv)


def run_main(argv: list[str] | None = None) -> int:
    """``python -m ftcalc.executor SPEC ...``: the run command without the rest of the CLI (used by torchrun)."""
    import argparse

    from ftcalc.cli.common import run_with_errors

    parser = argparse.ArgumentParser(prog="python -m ftcalc.executor")
    add_run_parser(parser.add_subparsers(dest="command"))
    return run_with_errors(parser, ["run", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
