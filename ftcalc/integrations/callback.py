"""Check a transformers / TRL / axolotl training job against ftcalc's estimate before its first step.

    from ftcalc.integrations import FtcalcCallback
    trainer = Trainer(model, args, train_dataset=ds, callbacks=[FtcalcCallback(gpu="rtx-4090")])
    trainer.train()    # prints the prediction; raises DoesNotFitError before step 1 if it will not fit

At ``on_train_begin`` (after the Trainer has built the optimizer and moved the model, before the first step) the
callback maps the live ``args`` (``TrainingArguments`` / ``SFTConfig``: the same mapping as ``ftcalc estimate
--from``, ftcalc/integrations/trainer_config.py) and the live model (its ``config`` gives the architecture, a
peft model's ``peft_config`` the LoRA settings, ``config.quantization_config`` 4-bit QLoRA) to ftcalc's options,
prints the estimate and compares it with the device: ``gpu=`` (a slug of ``ftcalc gpus``), ``gpu_memory_gib=``
(any size, e.g. a MIG slice), or the CUDA device's total memory. When it does not fit, ``on_oom="stop"`` raises
:class:`ftcalc.errors.DoesNotFitError` (the Trainer checks ``control.should_training_stop`` only after a step,
transformers 5.25.0 trainer.py ``_inner_training_loop``, so raising is what stops it before step 1);
``on_oom="warn"`` prints and goes on. On a machine without CUDA there is no device to fit: it says so and only
prints the prediction.

After ``measure_steps`` optimizer steps on CUDA it prints ``torch.cuda.max_memory_allocated`` /
``max_memory_reserved`` and the device used (reserved peak plus what lives outside the allocator, as
``ftcalc profile`` measures it: ftcalc/measure/profile.py ``cuda_memory_readings``) against the prediction, and with
``record_file=`` appends one measurement row (docs/measurements.md schema, ``trainer`` and ``source`` naming
where it came from) through ``ftcalc.measure.profile.record_rows``. Nothing is sent anywhere.
"""

from __future__ import annotations

import datetime as _dt
import platform
import sys
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ftcalc.errors import DoesNotFitError, InvalidArgumentError
from ftcalc.sizes import GIB

__all__ = ["FtcalcCallback", "options_from_live"]

_SCAN_ROWS = 10_000  # rows of a map-style dataset scanned for the longest one when the length is not configured


def _spec_from_model(model: Any, model_name: str | None) -> Any:
    """The model spec: ``model_name`` (resolved as ``--model`` is), else the catalog entry whose id or alias is the
    model's ``_name_or_path`` (so a recorded row names a catalog id), else the live ``model.config``."""
    from ftcalc.tables.catalog import ModelSpec, architecture_from_config, list_models, resolve_model

    if model_name:
        return resolve_model(model_name)
    cfg = model.config.to_dict()
    name = getattr(model.config, "_name_or_path", "") or cfg.get("model_type", "model")
    for m in list_models():
        if str(name).lower() in (m.id.lower(), *(a.lower() for a in m.aliases)):
            return m
    return ModelSpec(id=str(name), arch=architecture_from_config(cfg, where=f"{name} (live model.config)"),
                     config=cfg, origin="file", source="live model.config")


def _peft_config(model: Any) -> dict[str, Any] | None:
    pc = getattr(model, "peft_config", None)
    if isinstance(pc, dict) and pc:
        c = pc.get("default") or next(iter(pc.values()))
        d = c.to_dict() if hasattr(c, "to_dict") else dict(c)
        return {k: (sorted(v) if isinstance(v, set) else getattr(v, "value", v)) for k, v in d.items()}
    return None


def _quant_config(model: Any) -> dict[str, Any] | None:
    q = getattr(model.config, "quantization_config", None)
    if q is None:
        return None
    return q.to_dict() if hasattr(q, "to_dict") else dict(q)


def _longest_row(dataset: Any) -> int | None:
    """Longest ``input_ids`` among the first rows of a map-style dataset (no RNG touched, nothing consumed)."""
    try:
        n = min(len(dataset), _SCAN_ROWS)
        return max(len(dataset[i]["input_ids"]) for i in range(n)) if n else None
    except Exception:  # noqa: BLE001 - iterable or unusual datasets: the length stays unknown
        return None


def options_from_live(args: Any, model: Any, seq_len: int | None = None, train_dataloader: Any = None,
                      model_name: str | None = None) -> tuple[Any, Any, Any]:
    """(model spec, TrainingOptions, TrainerConfig) from a live Trainer's ``args`` and ``model``.

    The sequence length: ``seq_len`` if given, else ``args.max_length`` (TRL SFTConfig), else the longest
    ``input_ids`` among the first 10,000 rows of the train dataset.
    """
    from ftcalc.integrations.trainer_config import _merge, map_config

    d = {k: v for k, v in args.to_dict().items()}
    sft = hasattr(args, "max_length") and hasattr(args, "packing")
    peft = _peft_config(model)
    quant = _quant_config(model)
    mik = dict(d.get("model_init_kwargs") or {})
    if not (quant and (quant.get("load_in_4bit") or quant.get("_load_in_4bit"))):
        dtype = str(getattr(model, "dtype", "")).replace("torch.", "")
        if dtype:
            mik["dtype"] = dtype  # the live weights' dtype, not the file's
    attn = getattr(model.config, "_attn_implementation", None)
    if attn:
        mik["attn_implementation"] = attn
    d["model_init_kwargs"] = mik
    tc = map_config(d, tool="trl-sft" if sft else "transformers", where=f"live {type(args).__name__}")
    if not sft:
        n = seq_len or _longest_row(getattr(train_dataloader, "dataset", None))
        if n is None:
            raise InvalidArgumentError("the sequence length is not in TrainingArguments and the train dataset has "
                                       "no measurable input_ids: pass FtcalcCallback(seq_len=...)")
        tc.options["seq_len"] = int(n)
        tc.mapped["seq_len"] = f"seq_len={n}" if seq_len else f"longest input_ids of the train dataset ({n})"
    elif seq_len:
        tc.options["seq_len"], tc.mapped["seq_len"] = int(seq_len), f"seq_len={seq_len} (callback argument)"
    tc.options.setdefault("method", "full")
    if peft:
        _merge(tc, map_config(peft, tool="peft-lora", where="live peft_config"))
    if quant:
        _merge(tc, map_config(quant, tool="bitsandbytes", where="live quantization_config"))
    world = int(getattr(args, "world_size", 1) or 1)
    if world > 1:
        tc.options["num_gpus"], tc.mapped["num_gpus"] = world, f"args.world_size={world}"
    spec = _spec_from_model(model, model_name)
    return spec, tc.make_options(), tc


class FtcalcCallback(TrainerCallback):
    """Predict the job's GPU memory at ``on_train_begin``, stop it before step 1 if it will not fit, and compare.

    Args:
        gpu: a GPU slug or alias (``ftcalc gpus``) to check against; default: the CUDA device in use.
        gpu_memory_gib: the device's memory in GiB, for a device not in the table (overrides ``gpu``'s size).
        on_oom: ``stop`` (raise :class:`DoesNotFitError` before step 1) or ``warn`` (print and go on).
        measure_steps: optimizer steps after which the measured peaks are printed (CUDA only).
        record_file: a JSONL file to append the measurement row to (CUDA only); never inside the package.
        seq_len: tokens per row, when neither ``args`` nor the dataset says (plain Trainer).
        model_name: a catalog id to take the architecture from instead of ``model.config``.
        trainer: the trainer's name for the row (default: ``trl.SFTTrainer`` with an SFTConfig, else
            ``transformers.Trainer``).
        stream: where to print (default ``sys.stdout``).
    Raises:
        InvalidArgumentError: a bad argument (at construction), or an unknown sequence length.
        DoesNotFitError: at ``on_train_begin`` with ``on_oom="stop"`` when the estimate exceeds the device.
    """

    def __init__(self, gpu: str | None = None, gpu_memory_gib: float | None = None, on_oom: str = "stop",
                 measure_steps: int = 3, record_file: str | Path | None = None, seq_len: int | None = None,
                 model_name: str | None = None, trainer: str | None = None, stream: Any = None) -> None:
        if on_oom not in ("stop", "warn"):
            raise InvalidArgumentError(f"on_oom={on_oom!r}: expected 'stop' or 'warn'")
        if measure_steps < 1:
            raise InvalidArgumentError(f"measure_steps={measure_steps}: expected 1 or more")
        if gpu_memory_gib is not None and gpu_memory_gib <= 0:
            raise InvalidArgumentError(f"gpu_memory_gib={gpu_memory_gib}: expected a positive size in GiB")
        if record_file is not None:
            out = Path(record_file).expanduser().resolve()
            if Path(__file__).resolve().parents[1] in out.parents:  # ftcalc/integrations/ -> the package
                raise InvalidArgumentError(f"record_file={record_file}: inside the installed ftcalc package; "
                                           "choose a file of your own")
        if gpu is not None:
            from ftcalc.tables.hardware import get_gpu

            get_gpu(gpu)  # an unknown slug fails here, not after the model is built
        self.gpu, self.gpu_memory_gib, self.on_oom = gpu, gpu_memory_gib, on_oom
        self.measure_steps, self.record_file, self.seq_len = measure_steps, record_file, seq_len
        self.model_name, self.trainer_name = model_name, trainer
        self.stream = stream
        self.estimate: Any = None
        self.options: Any = None
        self.trainer_config: Any = None
        self.capacity_bytes: int | None = None
        self.measured: dict[str, Any] | None = None
        self._t0 = 0.0

    def _print(self, msg: str) -> None:
        print(f"[ftcalc] {msg}", file=self.stream or sys.stdout, flush=True)

    # --- before step 1 ---
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, train_dataloader: Any = None,
                       **kwargs: Any) -> Any:
        from ftcalc.model.estimator import estimate_options

        spec, opts, tc = options_from_live(args, model, self.seq_len, train_dataloader, self.model_name)
        self.options, self.trainer_config = opts, tc
        if self.trainer_name is None:
            self.trainer_name = "trl.SFTTrainer" if tc.tool == "trl-sft" else "transformers.Trainer"
        est = estimate_options(spec, opts, gpu=self.gpu)
        self.estimate = est
        main = getattr(state, "is_world_process_zero", True)
        used = est.per_gpu_device_used_bytes or est.device_used_bytes
        cap, where = self._capacity(est, args)
        self.capacity_bytes = cap
        if main:
            self._print(f"{spec.id} {opts.method} seq {opts.seq_len} x batch {opts.batch_size}, {opts.optimizer}, "
                        f"{opts.precision}, checkpointing {'on' if opts.checkpointing else 'off'}, "
                        f"attention {est.attention}, loss {opts.loss}")
            self._print(f"predicted: peak allocated {est.peak_allocated_bytes / GIB:.2f} GiB, peak reserved "
                        f"{est.peak_reserved_bytes / GIB:.2f} GiB, device used {used / GIB:.2f} GiB"
                        + (f" per GPU ({est.distribution}, {opts.num_gpus} GPUs)" if est.distribution else ""))
            for n in tc.not_modelled:
                self._print(f"not modelled: {n}")
            for a in tc.assumptions:
                self._print(f"assumed: {a}")
        if cap is None:
            if main:
                self._print("no CUDA device and no gpu= / gpu_memory_gib= given: nothing to fit against; "
                            "prediction only")
            return control
        if used <= cap:
            if main:
                self._print(f"fits {where} ({cap / GIB:.2f} GiB): headroom {(cap - used) / GIB:+.2f} GiB")
            return control
        msg = (f"{spec.id} {opts.method} seq {opts.seq_len} x batch {opts.batch_size} needs {used / GIB:.2f} GiB, "
               f"{where} has {cap / GIB:.2f} GiB: it will not fit (try `ftcalc fit --maximize batch-size` "
               "or a smaller batch, checkpointing, QLoRA)")
        if self.on_oom == "warn":
            if main:
                self._print(f"WARNING: {msg}")
            return control
        control.should_training_stop = True
        raise DoesNotFitError(f"stopped before step 1: {msg}")

    def _capacity(self, est: Any, args: Any) -> tuple[int | None, str]:
        if self.gpu_memory_gib is not None:
            return int(self.gpu_memory_gib * GIB), "the device given (gpu_memory_gib)"
        if est.gpu_memory_bytes:
            return int(est.gpu_memory_bytes), est.gpu
        import torch

        dev = getattr(args, "device", None)
        if torch.cuda.is_available() and getattr(dev, "type", "cuda") == "cuda":
            _, total = torch.cuda.mem_get_info(dev if getattr(dev, "index", None) is not None else None)
            return int(total), torch.cuda.get_device_name(dev)
        return None, "no device"

    # --- the measurement ---
    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step == 0 and not self._t0:
            self._t0 = time.perf_counter()
            import torch

            if torch.cuda.is_available() and getattr(args.device, "type", "") == "cuda":
                torch.cuda.reset_peak_memory_stats(args.device)  # the steps' peaks; weights and states stay counted
        return control

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        if state.global_step != self.measure_steps or self.estimate is None:
            return control
        import torch

        main = getattr(state, "is_world_process_zero", True)
        if not (torch.cuda.is_available() and getattr(args.device, "type", "") == "cuda"):
            if main:
                self._print(f"after {state.global_step} steps: no CUDA device, nothing measured")
            return control
        from ftcalc.measure.profile import cuda_memory_readings

        dev = args.device
        torch.cuda.synchronize(dev)
        _, total = torch.cuda.mem_get_info(dev)
        m = cuda_memory_readings(dev, total)
        self.measured = m
        est = self.estimate
        pred_used = est.per_gpu_device_used_bytes or est.device_used_bytes
        if main:
            for label, meas, pred in (("peak allocated", m["peak_allocated_bytes"], est.peak_allocated_bytes),
                                      ("peak reserved", m["peak_reserved_bytes"], est.peak_reserved_bytes),
                                      ("device used", m["device_used_bytes"], pred_used)):
                self._print(f"after {state.global_step} steps: {label:15s} measured {meas / GIB:7.2f} GiB, "
                            f"predicted {pred / GIB:7.2f} GiB ({(pred - meas) / meas:+.1%})")
            if m["num_alloc_retries"]:
                self._print(f"the allocator freed cached blocks and retried {m['num_alloc_retries']} times "
                            "(near the limit)")
        if self.record_file and main:
            from ftcalc.measure.profile import record_rows

            path = record_rows([self._row(args, state, model, m, total)], str(self.record_file))
            self._print(f"measurement row appended to {path}")
        return control

    def _row(self, args: Any, state: Any, model: Any, m: dict[str, Any], total: int) -> dict[str, Any]:
        """One row of the measurement database (docs/measurements.md, schema version 1)."""
        import torch

        opts, est = self.options, self.estimate
        now = _dt.datetime.now(_dt.timezone.utc)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad) if model is not None else None
        return {
            "schema_version": 1,
            "run_id": f"user-{now.strftime('%Y%m%dT%H%M%SZ')}",
            "model": est.model,
            **opts.model_dump(mode="json"),
            "gradient_checkpointing": opts.checkpointing,
            "attn_implementation": getattr(getattr(model, "config", None), "_attn_implementation", None),
            "steps": int(state.global_step),
            "warmup_steps": 0,
            "outcome": "ok",
            "error": None,
            **m,
            "trainable_params": trainable,
            "step_seconds_median": (time.perf_counter() - self._t0) / max(1, state.global_step),
            "gpu_name": torch.cuda.get_device_name(args.device),
            "gpu_total_bytes": total,
            "cuda": torch.version.cuda,
            "versions": _versions(),
            "python": platform.python_version(),
            "date": now.isoformat(timespec="seconds"),
            "trainer": self.trainer_name,
            "trainer_config": {"mapped": self.trainer_config.mapped,
                               "not_modelled": self.trainer_config.not_modelled},
            "predicted": {"peak_allocated_bytes": est.peak_allocated_bytes,
                          "peak_reserved_bytes": est.peak_reserved_bytes,
                          "device_used_bytes": est.per_gpu_device_used_bytes or est.device_used_bytes,
                          "coefficients": est.coefficients},
            "source": "ftcalc.integrations.FtcalcCallback",
        }


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "liger-kernel", "ftcalc"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out

