"""Write a training spec with the estimator's prediction in it: ``ftcalc plan``.

    ftcalc plan --model tiny-llama --method qlora --dataset data/samples/alpaca_sample.jsonl \\
        --max-steps 4 --device cpu -o spec.yaml
    ftcalc plan --model 8b --method lora --dataset train.jsonl --gpu h100 --num-gpus 2 -o spec.yaml \\
        --emit accelerate --emit skypilot

It never imports torch: the dataset is read and checked line by line (ftcalc/train/dataset.py's reader), its
token lengths are counted with the ``tokenizers`` library when the tokenizer is a local folder (else
estimated at 4 characters per token), and ``predicted`` comes from ftcalc.model.estimator (memory always;
tokens/s, hours and cost when ``--gpu`` names the GPU).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ftcalc.errors import InvalidArgumentError
from ftcalc.model.options import DEFAULTS
from ftcalc.train.spec import SpecError, TrainingSpec, spec_from_dict
from ftcalc.validation import param

__all__ = ["make_spec", "detect_format", "from_recommendation_plan", "CHARS_PER_TOKEN"]

CHARS_PER_TOKEN = 4.0  # rough English average for BPE vocabularies, used only without a local tokenizer
_LENGTH_SAMPLE = 4000  # rows whose token length is measured to choose sequence_len


def detect_format(path: str | Path) -> str:
    """alpaca, chat or text, from the keys of the file's first non-empty line."""
    from ftcalc.train.dataset import DatasetError

    p = Path(path)
    try:
        with p.open("rb") as f:
            for n, raw in enumerate(f, 1):  # noqa: B007 - n names the line below
                if raw.strip():
                    break
            else:
                raise DatasetError(f"{p}: empty dataset (no lines)")
    except FileNotFoundError:
        raise DatasetError(f"{p}: no such dataset file (--dataset)") from None
    except IsADirectoryError:
        raise DatasetError(f"{p}: a folder, not a dataset file; give the JSONL file itself (--dataset)") from None
    except OSError as e:
        raise DatasetError(f"{p}: cannot read the dataset ({e.strerror})") from None
    try:
        row = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{p}:{n}: not JSON ({e})") from None
    keys = set(row) if isinstance(row, dict) else set()
    for fmt, key in (("chat", "messages"), ("alpaca", "instruction"), ("text", "text")):
        if key in keys:
            return fmt
    raise DatasetError(f"{p}:{n}: cannot tell the format from the keys ({', '.join(sorted(keys)) or 'none'}): "
                       "pass --format alpaca|chat|text")


def _lengths(rows: list[tuple[int, dict]], fmt: str, tokenizer_dir: Path | None) -> tuple[list[int], str]:
    """Token lengths of (a sample of) the rows, and how they were obtained."""
    from ftcalc.train.dataset import ALPACA_PROMPT, ALPACA_PROMPT_NO_INPUT

    def render(r: dict) -> str:
        if fmt == "alpaca":
            return (ALPACA_PROMPT.format(instruction=r["instruction"], input=r["input"]) if r.get("input")
                    else ALPACA_PROMPT_NO_INPUT.format(instruction=r["instruction"])) + r["output"]
        if fmt == "chat":  # close to what a chat template adds: a role header and an end token per message
            return "".join(f"<|{m['role']}|>\n{m['content']}</s>\n" for m in r["messages"])
        return r["text"]

    step = max(1, len(rows) // _LENGTH_SAMPLE)
    texts = [render(r) for _, r in rows[::step]]
    if tokenizer_dir is not None and (tokenizer_dir / "tokenizer.json").is_file():
        try:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
            return [len(e.ids) + 2 for e in tok.encode_batch(texts)], f"counted with {tokenizer_dir.name}"
        except ImportError:
            pass
    return [math.ceil(len(t) / CHARS_PER_TOKEN) + 2 for t in texts], f"estimated at {CHARS_PER_TOKEN:g} chars/token"


def _percentile(values: list[int], q: float) -> int:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def make_spec(model: str, method: str, dataset: str | Path, *, out_path: str | Path | None = None,
              data_format: str | None = None, max_steps: int | None = None, num_epochs: float = 1.0,
              device: str = "cuda", gpu: str | None = None, num_gpus: int = 1, num_nodes: int = 1,
              distribution: str | None = None, seq_len: int | None = None, batch_size: int = 1,
              gradient_accumulation_steps: int = 1, gradient_checkpointing: bool | None = None,
              optimizer: str = "adamw_torch", precision: str = "bf16-true", lora_r: int = DEFAULTS.lora_r,
              lora_alpha: float = DEFAULTS.lora_alpha, lora_dropout: float = DEFAULTS.lora_dropout, lora_targets: str = "all-linear",
              attention: str = "auto", loss: str = "standard", quant_type: str = "nf4", double_quant: bool = True,
              init: str | None = None, tokenizer: str | None = None, learning_rate: float | None = None,
              lr_scheduler: str = "cosine", warmup_steps: int = 0, val_set_size: float = 0.0,
              sample_packing: bool | None = None, on_bad_line: str = "error", train_on: str = "all",
              output_dir: str = "run",
              save_steps: int | None = None, save_total_limit: int = 2, merge_adapter: bool = False,
              seed: int = 42, spot: bool = False, provider: str | None = None,
              from_recommendation: int | None = None, max_gpus: int = 8, objective: str = "cost",
              notes: list[str] | None = None) -> TrainingSpec:
    """A validated spec for ``model``/``method`` on ``dataset``, with ``predicted`` filled by the estimator.

    Args mirror ``ftcalc plan --help``. Defaults that depend on the inputs:
        data_format: from the first line's keys; seq_len: the dataset's 99th-percentile token length
        rounded up to a multiple of 64 (2048 with packing), capped at the model's context;
        init: random for models written for ftcalc (no published weights), else pretrained;
        learning_rate: 2e-4 for lora/qlora, 2e-5 for full; distribution: single on one GPU, ddp for
        adapters and fsdp for full fine-tuning on several.
        out_path: where the spec will be written: relative paths in it are made relative to its folder.
        from_recommendation: take GPU, count, method, micro-batch, accumulation, checkpointing and sharding
            from the Nth plan (1-based) of ``ftcalc.solver.search.recommend`` over this dataset's tokens
            (``max_gpus``, ``objective``, ``gpu``, ``provider``, ``spot`` constrain it); its memory, speed,
            hours and cost become ``predicted``. Packing defaults to on: the solver counts packed tokens.
        notes: if given, lines describing the choices made are appended to it.
    Raises:
        DatasetError, UnknownModelError, UnknownGPUError, InvalidArgumentError, SpecError.
    """
    from ftcalc._version import __version__
    from ftcalc.model.estimator import estimate_options
    from ftcalc.tables.catalog import resolve_model
    from ftcalc.train.dataset import read_rows, shipped_tokenizer

    notes = notes if notes is not None else []
    mspec = resolve_model(model)
    data_path = Path(dataset)
    fmt = data_format or detect_format(data_path)
    rows, skipped = read_rows(data_path, fmt, on_bad_line)
    if skipped:
        notes.append(f"{len(skipped)} bad lines will be skipped; first: {skipped[0]}")
    tok_dir = Path(tokenizer) if tokenizer and Path(tokenizer).is_dir() else shipped_tokenizer(mspec.id, mspec.aliases)
    lengths, how = _lengths(rows, fmt, tok_dir)
    context = mspec.arch.max_position_embeddings or 1 << 30
    if from_recommendation is not None and sample_packing is None:
        sample_packing = True
    sample_packing = bool(sample_packing)
    if seq_len is None:
        if sample_packing:
            seq_len = min(2048, context)
        else:
            seq_len = min(context, max(64, math.ceil(_percentile(lengths, 0.99) / 64) * 64))
        notes.append(f"sequence_len {seq_len}: 99% of rows fit ({how}); --seq-len sets it")
    rec = None
    offload = False
    if from_recommendation is not None:
        mean_len = sum(min(n, seq_len) for n in lengths) / len(lengths)
        rec = from_recommendation_plan(
            from_recommendation, model=model, method=method, dataset_tokens=max(1, int(mean_len * len(rows))),
            epochs=num_epochs, seq_len=seq_len, gpu=gpu, provider=provider, max_gpus=max_gpus, spot=spot,
            objective=objective, optimizer=optimizer, precision=precision, lora_r=lora_r)
        method, batch_size, gradient_accumulation_steps = rec.method, rec.micro_batch_size, rec.grad_accum
        gradient_checkpointing, gpu, device = rec.gradient_checkpointing, rec.gpu, "cuda"
        num_nodes = max(1, rec.num_instances)
        num_gpus = max(1, rec.num_gpus // num_nodes)
        distribution = {"single": "single", "ddp": "ddp"}.get(rec.sharding, "fsdp")
        offload = rec.sharding == "fsdp_offload"
        notes.append(f"plan {from_recommendation} of the recommendation: {rec.num_gpus} x {rec.gpu} on {rec.provider} "
                     f"{rec.instance_type}, {rec.method}, {rec.sharding}, micro-batch {rec.micro_batch_size} x "
                     f"accumulation {rec.grad_accum}")
    if method not in ("full", "lora", "qlora"):
        raise InvalidArgumentError(f"--method {method}: expected full, lora or qlora (auto needs --from-recommendation)")
    if device == "cpu":  # --num-gpus counts processes per node: DDP over gloo (rehearsals of multi-node launches)
        if num_gpus * num_nodes > 1 and distribution not in (None, "ddp"):
            raise InvalidArgumentError(f"--device cpu with several processes runs DDP over gloo: --distribution "
                                       f"ddp, not {distribution}")
        gpu = None
    world = num_gpus * num_nodes
    default_distribution = distribution is None
    if distribution is None:  # refined below for LoRA/QLoRA once the options are known (parallel.default_strategy)
        distribution = "single" if world == 1 else ("fsdp" if method == "full" and device != "cpu" else "ddp")
    if init is None:
        init = "random" if mspec.id.startswith("ftcalc/") else "pretrained"
    if learning_rate is None:
        learning_rate = 2e-5 if method == "full" else 2e-4

    spec_dir = Path(out_path).resolve().parent if out_path else None

    def rel(p: str | Path) -> str:
        """Relative to the spec's folder when the file lives under it (it travels with the spec), else absolute."""
        if spec_dir is None:
            return str(p)
        r = os.path.relpath(Path(p).resolve(), spec_dir)
        return str(Path(p).resolve()) if r.startswith("..") else r

    raw: dict[str, Any] = {
        "spec_version": 1,
        "model": {"base_model": mspec.id if mspec.origin != "file" else rel(model), "init": init,
                  "tokenizer": (rel(tokenizer) if Path(tokenizer).exists() else tokenizer) if tokenizer else None},
        "method": method,
        "lora": {"lora_r": lora_r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout,
                 "lora_targets": lora_targets, "quant_type": quant_type, "double_quant": double_quant},
        "precision": precision, "optimizer": optimizer, "gradient_checkpointing": gradient_checkpointing,
        "attention": attention, "loss": loss, "sequence_len": seq_len, "micro_batch_size": batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "data": {"path": rel(data_path), "format": fmt, "val_set_size": val_set_size,
                 "sample_packing": sample_packing, "on_bad_line": on_bad_line, "train_on": train_on},
        "training": {"learning_rate": learning_rate, "lr_scheduler": lr_scheduler, "warmup_steps": warmup_steps,
                     "num_epochs": num_epochs, "max_steps": max_steps, "seed": seed},
        "hardware": {"gpu": gpu, "num_gpus": num_gpus, "num_nodes": num_nodes, "device": device},
        "distribution": {"strategy": distribution, "fsdp": {"offload_params": offload}},
        "output": {"output_dir": output_dir, "save_steps": save_steps, "save_total_limit": save_total_limit,
                   "merge_adapter": merge_adapter},
    }
    spec = spec_from_dict(raw, where="plan")
    opts = spec.to_options()
    if spec.gradient_checkpointing is None:  # write the resolved value: the reader should not need the rule
        spec = spec.model_copy(update={"gradient_checkpointing": opts.checkpointing})
    if default_distribution and world > 1 and num_nodes == 1 and gpu and method in ("lora", "qlora"):
        from ftcalc.model.parallel import default_strategy

        distribution = default_strategy(mspec, opts, gpu, num_gpus)  # FSDP when a replica does not fit
        spec = spec.model_copy(update={"distribution": spec.distribution.model_copy(update={"strategy": distribution})})

    # steps: rows after the validation split, per global batch (packed: estimated tokens / sequence_len)
    n = len(rows)
    n_val = int(val_set_size) if val_set_size >= 1 else (max(1, round(val_set_size * n)) if val_set_size else 0)
    n_train = n - n_val
    if n_train < 1:
        raise InvalidArgumentError(f"{param('val_set_size')} {val_set_size:g}: {data_path} has {n} rows, so no row "
                                   f"would be left to train on; give a fraction below 1 or fewer than {n} rows")
    if sample_packing:
        n_train = max(1, math.ceil(n_train * (sum(lengths) / len(lengths)) / seq_len))
    steps_per_epoch = n_train // spec.global_batch_size
    if steps_per_epoch < 1:
        raise InvalidArgumentError(
            f"{data_path}: about {n_train} training sequences, fewer than one step takes (micro-batch {batch_size} x "
            f"accumulation {gradient_accumulation_steps} x {world} GPUs); lower --batch-size or add data")
    total_steps = max_steps or max(1, math.ceil(num_epochs * steps_per_epoch))
    total_tokens = total_steps * spec.global_batch_size * seq_len

    # one node's GPUs: the estimator plans one node (num_gpus of one node); several nodes are the world below
    node_opts = opts.model_copy(update={"num_gpus": num_gpus}) if num_nodes > 1 else opts
    est = estimate_options(mspec, node_opts, gpu=gpu)
    pred: dict[str, Any] = {
        "device_used_bytes": est.device_used_bytes, "peak_allocated_bytes": est.peak_allocated_bytes,
        "peak_reserved_bytes": est.peak_reserved_bytes, "total_steps": total_steps, "total_tokens": total_tokens,
        "gpu": est.gpu, "coefficients": est.coefficients, "ftcalc_version": __version__,
    }
    if est.tokens_per_second:
        pred["tokens_per_second"] = round(est.tokens_per_second, 1)
        from ftcalc.model.throughput import host_note

        note = host_note(est.host_launch_ratio)
        if note:
            notes.append(note)
        pred["hours"] = total_tokens / (est.tokens_per_second * world) / 3600
        try:
            from ftcalc.tables.pricing import cheapest_instances

            choices = cheapest_instances(est.gpu, world, spot=spot, providers=provider)
        except Exception as e:  # noqa: BLE001 - a price table problem must not stop planning
            choices = []
            notes.append(f"no price: {e}")
        if choices:
            c = choices[0]
            pred.update(usd_per_hour=c.usd_per_hour, cost_usd=round(c.usd_per_hour * pred["hours"], 4),
                        provider=c.provider, instance_type=c.instance_type)
    if world > 1 and gpu and est.tokens_per_second:
        # several GPUs: per-GPU memory and speed under DDP / FSDP over the whole world, nodes linked by the
        # instance's inter-node bandwidth (ftcalc.model.parallel, ftcalc.model.sharding, docs/multi-gpu.md)
        from ftcalc.model.parallel import estimate_parallel, strategy_of

        fsdp = spec.distribution.fsdp
        par = estimate_parallel(mspec, node_opts, est.gpu, strategy_of(distribution, fsdp.offload_params,
                                                                       fsdp.reshard_after_forward), world,
                                num_instances=num_nodes)
        pred.update(device_used_bytes=int(par.device_used_bytes), peak_allocated_bytes=int(par.peak_allocated_bytes),
                    tokens_per_second=round(par.tokens_per_second_per_gpu, 1))
        pred.pop("peak_reserved_bytes", None)  # the multi-GPU model predicts allocated and device used
        pred["hours"] = total_tokens / par.tokens_per_second / 3600
        if pred.get("usd_per_hour"):
            pred["cost_usd"] = round(pred["usd_per_hour"] * pred["hours"], 4)
    if gpu and est.gpu_memory_bytes and pred["device_used_bytes"] > est.gpu_memory_bytes:
        notes.append(f"the estimator predicts this does NOT fit on {est.gpu}: needs "
                     f"{pred['device_used_bytes'] / 1e9:.1f} GB per GPU, the GPU has {est.gpu_memory_bytes / 1e9:.1f} GB")
    if rec is not None:  # the solver models sharding, multi-GPU time, start-up and billing: its figures win
        pred.update(device_used_bytes=int(rec.device_used_bytes), tokens_per_second=round(rec.tokens_per_second_per_gpu, 1),
                    hours=rec.est_hours, cost_usd=round(rec.est_cost_usd, 4), usd_per_hour=rec.usd_per_hour,
                    provider=rec.provider, instance_type=rec.instance_type, gpu=rec.gpu)
    try:
        return spec.model_copy(update={"predicted": spec.predicted.model_validate(pred)})
    except Exception as e:  # pragma: no cover - the estimator's own output
        raise SpecError(f"predicted block: {e}") from None


def from_recommendation_plan(index: int, **kwargs: Any) -> Any:
    """The ``index``-th (1-based) plan of ``ftcalc.solver.search.recommend(**kwargs)``."""
    import importlib.util

    if importlib.util.find_spec("ftcalc.solver.search") is None:
        raise InvalidArgumentError(
            "--from-recommendation needs the solver (`ftcalc recommend`, ftcalc/solver/search.py), which this ftcalc does "
            "not have; pass --model, --method and --gpu instead")
    from ftcalc.solver import search as solver

    if index < 1:
        raise InvalidArgumentError(f"--from-recommendation {index}: plans are numbered from 1")
    kwargs["top"] = max(index, 5)
    plans = list(solver.recommend(**kwargs).plans)
    if index > len(plans):
        raise InvalidArgumentError(f"--from-recommendation {index}: the recommendation has {len(plans)} plans "
                                   "(see `ftcalc recommend`)")
    return plans[index - 1]
