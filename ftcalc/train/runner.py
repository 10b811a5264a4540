"""Run a training spec: ``ftcalc run``.

    ftcalc run spec.yaml --output-dir run/              # one device (cuda or cpu), in this process
    ftcalc run spec.yaml --output-dir run/ --resume     # continue from the newest complete checkpoint
    python -m ftcalc.executor spec.yaml --output-dir run/   # the same, without the ftcalc CLI

What it does, in order (docs/executor.md has the long version):
1. checks everything a user can get wrong before loading the model: the output dir (empty, or this
   spec's run with ``--resume``), the tokenizer, every dataset line, and on CUDA the pre-flight
   (the spec's predicted device memory against the GPU's free memory; refused with the smallest
   change that would fit, unless ``--force``);
2. builds model, adapters and optimizer with the shared recipe (ftcalc/train/recipe.py: what
   ``ftcalc profile`` measures and ftcalc/model/memory.py models), seeded so that a resumed run rebuilds
   the same random base weights;
3. trains: micro-batch ``m`` is a pure function of ``m`` (ftcalc/train/dataset.py), gradients accumulate
   over ``gradient_accumulation_steps`` micro-batches, then clipping, optimizer step, LR schedule;
   validation loss every ``eval_steps`` and at the end; checkpoints every ``save_steps`` written
   atomically (ftcalc/train/checkpoint.py) with optimizer, scheduler and RNG state;
4. on SIGTERM (spot preemption) or SIGINT: stops at the end of the current micro-batch, saves a
   checkpoint of the last completed step and exits 0 (a second signal stops at once);
5. saves the final adapter (or model) in ``final/``, optionally the merged model in ``merged/``, and
   ``run_report.json``: status, predicted, measured, relative errors, versions.

With ``hardware.num_gpus > 1`` and no launcher around it, it starts itself again under torchrun, one
process per GPU, with DDP (adapter methods) or FSDP2 (``distribution.strategy: fsdp``) through
accelerate's Accelerator.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftcalc.errors import DoesNotFitError, FtcalcError, InvalidArgumentError
from ftcalc.sizes import GIB
from ftcalc.train import checkpoint as ckpt
from ftcalc.train.spec import SpecError, TrainingSpec, load_spec, resolve_path, save_spec

__all__ = ["run", "OutputDirError", "PreflightError", "CheckpointError", "TrainingOOMError", "RunFailedError",
           "REPORT_NAME", "RUN_SPEC_NAME", "TRAIN_LOG_NAME", "preflight_suggestion"]

REPORT_NAME = "run_report.json"
RUN_SPEC_NAME = "run_spec.yaml"  # the spec a run was started with: marks a folder as an ftcalc run
TRAIN_LOG_NAME = "train_log.jsonl"  # one JSON line per optimizer step (and per validation)
REPORT_VERSION = 1


class OutputDirError(FtcalcError):
    """An output dir that holds another run, or files that are not a run: nothing there is touched."""


class PreflightError(DoesNotFitError):
    """The predicted device memory exceeds the GPU's free memory (``--force`` runs anyway)."""


class CheckpointError(FtcalcError):
    """A checkpoint that does not match the model it is loaded into."""


class TrainingOOMError(DoesNotFitError):
    """CUDA ran out of memory during training (the report is written with status oom)."""


class RunFailedError(FtcalcError):
    """The per-GPU training processes started by torchrun failed (their own output says why)."""


class _SimulatedKill(BaseException):
    """Test hook: stop like ``kill -9`` would, without saving anything."""


# --------------------------------------------------------------------------- entry point


def run(spec: TrainingSpec | str | Path, output_dir: str | Path | None = None, resume: bool = False,
        force: bool = False, record: bool = False, *, spec_path: str | Path | None = None,
        record_file: str | None = None, log: Callable[[str], None] | None = None,
        _stop_after_step: int | None = None) -> dict[str, Any]:
    """Train what ``spec`` says and return the run report (also written to ``<output_dir>/run_report.json``).

    Args:
        spec: a :class:`TrainingSpec` or the path of a spec file (YAML or JSON).
        output_dir: where checkpoints, ``final/`` and the report go; default the spec's
            ``output.output_dir`` (relative to the spec file).
        resume: continue the run in ``output_dir`` from its newest complete checkpoint (from the start
            if it has none yet; nothing to do if it completed).
        force: run even when the pre-flight predicts that the GPU's free memory is too small.
        record: append a measurement row (ftcalc/measure/profile.py's schema) to the measurement database
            (CUDA runs only); ``record_file`` names another JSONL file.
        spec_path: the spec file a :class:`TrainingSpec` came from (relative paths resolve against it).
        log: where progress lines go (default: print).
    Returns:
        The report dict: ``status`` (completed | interrupted), ``predicted``, ``measured``,
        ``relative_errors``, ``versions``, paths.
    Raises:
        SpecError, DatasetError, OutputDirError, PreflightError, TrainingOOMError, InvalidArgumentError,
        MissingDependencyError: problems the user can fix, each in one line.
    Example:
        >>> report = run("spec.yaml", output_dir="run")
        >>> report["status"], report["measured"]["tokens_per_second"]
    """
    if not isinstance(spec, TrainingSpec):
        spec_path = Path(spec)
        spec = load_spec(spec_path)
    out = Path(output_dir) if output_dir is not None else resolve_path(spec.output.output_dir, spec_path)
    env = _launcher_env()
    if spec.hardware.world_size > 1 and env is None:
        return _relaunch(spec, spec_path, out, resume=resume, force=force, record=record,
                         record_file=record_file, log=log or print)
    runner = _Runner(spec, spec_path, out, env, resume=resume, force=force, record=record,
                     record_file=record_file, log=log, stop_after_step=_stop_after_step)
    return runner.execute()


@dataclass(frozen=True)
class _Env:
    """What torchrun / accelerate launch put in the environment of each process."""

    world_size: int
    rank: int
    local_rank: int


def _launcher_env() -> _Env | None:
    if "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return _Env(int(os.environ["WORLD_SIZE"]), int(os.environ.get("RANK", 0)), int(os.environ["LOCAL_RANK"]))
    return None


# --------------------------------------------------------------------------- the output dir


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _read_report(out: Path) -> dict[str, Any]:
    try:
        return json.loads((out / REPORT_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def inspect_output_dir(out: Path, spec: TrainingSpec, resume: bool,
                       spec_path: Path | None = None) -> tuple[str, tuple[int, Path] | None]:
    """Decide what to do with ``out``: ``("fresh", None)``, ``("resume", checkpoint or None)``, ``("completed", None)``.

    Raises:
        OutputDirError: ``out`` is a file; holds files that are not an ftcalc run; holds a run of another
            spec; holds a run of this spec and ``resume`` is False. Nothing in ``out`` is changed.
    """
    if not out.exists():
        return "fresh", None
    if not out.is_dir():
        raise OutputDirError(f"--output-dir {out}: exists and is not a folder")
    run_spec = out / RUN_SPEC_NAME
    if not run_spec.is_file():
        own = spec_path.resolve() if spec_path else None
        others = sorted(p.name for p in out.iterdir() if p.resolve() != own)
        if others:
            shown = ", ".join(others[:4]) + (", ..." if len(others) > 4 else "")
            raise OutputDirError(f"--output-dir {out}: not empty ({shown}) and holds no ftcalc run; "
                                 "choose a new or empty folder")
        return "fresh", None
    try:
        theirs = load_spec(run_spec)
    except SpecError as e:
        raise OutputDirError(f"--output-dir {out}: holds a run whose spec cannot be read ({e}); "
                             "choose another folder") from None
    status = _read_report(out).get("status", "unknown")
    if theirs.fingerprint() != spec.fingerprint():
        a, b = _flat(theirs.model_dump(mode="json")), _flat(spec.model_dump(mode="json"))
        diff = [k for k in a if a.get(k) != b.get(k) and not k.startswith(("output.", "predicted."))]
        raise OutputDirError(
            f"--output-dir {out}: holds another run ({theirs.model.base_model} {theirs.method}, status {status}) whose "
            f"spec differs in {', '.join(diff[:5]) or 'its training settings'}; choose another folder"
        )
    latest = ckpt.latest_checkpoint(out)
    if not resume and status == "completed":
        raise OutputDirError(f"--output-dir {out}: holds this spec's completed run (final/ in it); choose another "
                             "folder to train again")
    if not resume:
        where = f"newest checkpoint {latest[1].name}" if latest else "no complete checkpoint"
        raise OutputDirError(f"--output-dir {out}: holds a run of this spec (status {status}, {where}); pass --resume "
                             "to continue it, or choose another folder")
    if status == "completed":
        return "completed", None
    return "resume", latest


# --------------------------------------------------------------------------- pre-flight


def preflight_suggestion(spec: TrainingSpec, available_bytes: int) -> str | None:
    """The smallest change to the spec that the estimator predicts fits in ``available_bytes``.

    Tried in order: gradient checkpointing on; halving micro_batch_size (doubling
    gradient_accumulation_steps, so the global batch stays); both; QLoRA with checkpointing.
    """
    from ftcalc.model.estimator import estimate_options
    from ftcalc.tables.catalog import resolve_model

    model = resolve_model(spec.model.base_model)
    opts = spec.to_options()
    variants: list[tuple[str, dict[str, Any]]] = []
    if not opts.checkpointing:
        variants.append(("gradient_checkpointing: true", {"gradient_checkpointing": True}))
    b = opts.batch_size // 2
    while b >= 1:
        accum = spec.gradient_accumulation_steps * (opts.batch_size // b)
        variants.append((f"micro_batch_size: {b} with gradient_accumulation_steps: {accum} (same global batch)",
                         {"batch_size": b}))
        if not opts.checkpointing:
            variants.append((f"micro_batch_size: {b} (gradient_accumulation_steps: {accum}) and "
                             "gradient_checkpointing: true", {"batch_size": b, "gradient_checkpointing": True}))
        b //= 2
    if opts.method != "qlora":
        variants.append(("method: qlora with gradient_checkpointing: true",
                         {"method": "qlora", "gradient_checkpointing": True}))
        variants.append(("method: qlora, gradient_checkpointing: true, micro_batch_size: 1",
                         {"method": "qlora", "gradient_checkpointing": True, "batch_size": 1}))
    for text, change in variants:
        est = estimate_options(model, opts.model_copy(update=change))
        if est.device_used_bytes <= available_bytes:
            return f"{text} (predicted {est.device_used_bytes / GIB:.2f} GiB)"
    return None


def _preflight(spec: TrainingSpec, device: str, force: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Compare the predicted device memory with this GPU's free memory; raise PreflightError unless force."""
    import torch

    from ftcalc.model.memory import load_coefficients

    dev = torch.device(device)
    torch.empty(1, device=dev)  # the CUDA context exists from here on
    free, total = torch.cuda.mem_get_info(dev)
    need = spec.predicted.device_used_bytes
    source = "spec.predicted"
    if need is None:
        from ftcalc.model.estimator import estimate_options
        from ftcalc.tables.catalog import resolve_model

        need = estimate_options(resolve_model(spec.model.base_model), spec.to_options()).device_used_bytes
        source = "the estimator"
    # The prediction includes this process's CUDA context and workspaces, which already exist now and
    # are counted as used: give back what this process holds, up to the modelled context size.
    available = free + min(int(load_coefficients().context_bytes), total - free)
    info = {"free_bytes": free, "total_bytes": total, "available_bytes": available, "predicted_bytes": need}
    if need <= available:
        return info
    name = torch.cuda.get_device_name(dev)
    msg = (f"pre-flight: {source} says this run needs {need / GIB:.2f} GiB of device memory, {name} ({dev}) has "
           f"{available / GIB:.2f} GiB available of {total / GIB:.2f} GiB")
    hint = preflight_suggestion(spec, available)
    msg += f"; it would fit with {hint}" if hint else "; no single-GPU variant fits: plan for more GPUs"
    if not force:
        raise PreflightError(msg + " (or pass --force to try anyway)")
    log(f"warning: {msg}; running anyway (--force)")
    return info


# --------------------------------------------------------------------------- signals


class _StopFlag:
    """SIGTERM/SIGINT set a flag polled after every micro-batch and validation batch; a second one stops now."""

    def __init__(self, log: Callable[[str], None]):
        self.signum: int | None = None
        self._log = log
        self._old: dict[int, Any] = {}

    def install(self) -> _StopFlag:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def uninstall(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # second signal: no more waiting
            self.uninstall()
            raise KeyboardInterrupt
        self.signum = signum
        self._log(f"received {signal.Signals(signum).name}: saving a checkpoint after this micro-batch, then exiting")

    @property
    def requested(self) -> bool:
        return self.signum is not None


# --------------------------------------------------------------------------- the run


def versions() -> dict[str, Any]:
    from ftcalc._version import __version__
    from ftcalc.train.records import versions as lib_versions

    return {"ftcalc": __version__, **lib_versions(), "python": platform.python_version()}


def _atomic_json(path: Path, obj: Any) -> None:
    from ftcalc.safe_write import write_text

    write_text(path, json.dumps(obj, indent=2, default=str) + "\n", force=True, what="run file")


class _Runner:
    """One process's view of a run (rank 0 of N, or the only one)."""

    def __init__(self, spec: TrainingSpec, spec_path: str | Path | None, out: Path, env: _Env | None, *,
                 resume: bool, force: bool, record: bool, record_file: str | None,
                 log: Callable[[str], None] | None, stop_after_step: int | None):
        self.spec, self.out, self.env = spec, out, env
        self.spec_path = Path(spec_path) if spec_path else None
        self.resume, self.force, self.record, self.record_file = resume, force, record, record_file
        self.world = env.world_size if env else 1
        self.rank = env.rank if env else 0
        self.is_main = self.rank == 0
        self._log = log or print
        self.stop_after_step = stop_after_step
        self.accelerator: Any = None
        self.report: dict[str, Any] = {}

    def log(self, msg: str) -> None:
        if self.is_main:
            self._log(msg)

    # ---- helpers that hide the difference between one process and N

    def barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def any_rank(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        import torch
        import torch.distributed as dist

        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def sum_ranks(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        import torch
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    # ---- phases

    def _check_spec(self) -> None:
        s = self.spec
        if s.output.merge_adapter and s.method == "full":
            raise InvalidArgumentError("output.merge_adapter: there is no adapter to merge in a full fine-tune; set it false")
        if s.output.merge_adapter and s.method == "qlora" and s.model.init == "random":
            raise InvalidArgumentError("output.merge_adapter with qlora needs init: pretrained (the base is reloaded "
                                       "in bf16 to merge); a random base has nothing worth merging")
        if self.record and s.hardware.device != "cuda":
            raise InvalidArgumentError("--record: measurements are of CUDA runs; this spec runs on "
                                       f"{s.hardware.device} (hardware.device)")

    def _tokenizer_name(self) -> str:
        from ftcalc.train.dataset import shipped_tokenizer

        m = self.spec.model
        if m.tokenizer:
            local = resolve_path(m.tokenizer, self.spec_path)
            return str(local) if local.exists() else m.tokenizer
        shipped = shipped_tokenizer(self.model_spec.id, self.model_spec.aliases)
        return str(shipped) if shipped else (self._model_path() or self.model_spec.id)

    def _model_path(self) -> str | None:
        local = resolve_path(self.spec.model.base_model, self.spec_path)
        return str(local) if local.exists() else None

    def _device(self) -> str:
        if self.spec.hardware.device == "cpu":
            return "cpu"
        import torch

        if not torch.cuda.is_available():
            raise InvalidArgumentError("hardware.device is cuda but torch sees no CUDA GPU; plan with --device cpu "
                                       "for a CPU run")
        if self.accelerator is not None:
            return str(self.accelerator.device)
        return f"cuda:{torch.cuda.current_device()}"

    def _make_accelerator(self) -> None:
        if self.world == 1:
            return
        from ftcalc.train import recipe

        dist = self.spec.distribution
        f = dist.fsdp
        self.accelerator = recipe.make_accelerator(
            self.model_spec, dist.strategy, reshard_after_forward=f.reshard_after_forward,
            offload_params=f.offload_params, state_dict_type=f.state_dict_type,
            cpu_ram_efficient_loading=f.cpu_ram_efficient_loading, cpu=self.spec.hardware.device == "cpu")

    def execute(self) -> dict[str, Any]:
        from ftcalc.tables.catalog import resolve_model
        from ftcalc.train.dataset import build_data, load_tokenizer

        s = self.spec
        self._check_spec()
        mode, start = inspect_output_dir(self.out, s, self.resume, self.spec_path)
        if mode == "completed":
            self.log(f"{self.out}: this run already completed; nothing to do (report: {self.out / REPORT_NAME})")
            return _read_report(self.out)
        model_path = self._model_path()
        self.model_spec = resolve_model(model_path or s.model.base_model)
        self._make_accelerator()
        # everything the user can get wrong in the data fails here, before the model is loaded
        tok_name = self._tokenizer_name()
        self.tokenizer = load_tokenizer(tok_name)
        data_path = resolve_path(s.data.path, self.spec_path)
        self.data = build_data(
            data_path, s.data.format, self.tokenizer, seq_len=s.sequence_len, seed=s.training.seed,
            val_set_size=s.data.val_set_size, sample_packing=s.data.sample_packing,
            micro_batch_size=s.micro_batch_size, gradient_accumulation_steps=s.gradient_accumulation_steps,
            world_size=self.world, on_bad_line=s.data.on_bad_line, vocab_size=self.model_spec.arch.vocab_size,
            train_on=s.data.train_on,
        )
        d = self.data
        if d.skipped:
            self.log(f"warning: skipped {len(d.skipped)} bad lines of {data_path} (data.on_bad_line: skip); "
                     f"first: {d.skipped[0]}")
        if d.truncated:
            self.log(f"note: {d.truncated} examples longer than sequence_len {s.sequence_len} were truncated")
        self.total_steps = d.total_steps(s.training.max_steps, s.training.num_epochs)
        self.device = self._device()
        self.preflight = _preflight(s, self.device, self.force, self.log) if self.device.startswith("cuda") else None
        self.barrier()  # every rank has inspected the output dir before rank 0 writes to it
        if self.is_main:
            from ftcalc.safe_write import make_dir

            make_dir(self.out)
            ckpt.remove_stale_temps(self.out)
            if mode == "fresh":
                save_spec(s, self.out / RUN_SPEC_NAME)
        self.barrier()
        tokens_step = s.global_batch_size * s.sequence_len
        self.log(f"{self.model_spec.id} {s.method} on {self.device} x{self.world}: {len(d.train)} train / {len(d.val)} "
                 f"validation sequences of <= {s.sequence_len} tokens (from {d.source_rows} rows); "
                 f"{self.total_steps} steps of {s.global_batch_size} sequences ({tokens_step:,} token positions), "
                 f"{d.steps_per_epoch} steps per epoch; tokenizer {tok_name}")
        self.report = self._base_report(tok_name, data_path)
        self._write_report()
        stop = _StopFlag(self._log if self.is_main else (lambda _m: None)).install()
        try:
            return self._train(start, stop)
        finally:
            stop.uninstall()

    # ---- model and state

    def _build(self) -> None:
        import torch
        from transformers import get_scheduler, set_seed

        from ftcalc.train import recipe

        s = self.spec
        self.opts = s.to_options()
        set_seed(s.training.seed)  # python, numpy, torch (+cuda): the same random base weights on resume
        t0 = time.perf_counter()
        if self.device.startswith("cuda"):
            torch.cuda.set_device(torch.device(self.device))
        fsdp = self.accelerator is not None and s.distribution.strategy == "fsdp"
        sharded = fsdp and s.model.init == "random"
        if sharded:  # built on meta, sharded, then each rank materializes its shards (a 70B never exists whole;
            # with CPU offload the shards are materialized in host memory)
            self.model = recipe.build_model_sharded(self.model_spec, self.opts, self.accelerator, self.device)
        else:
            self.model = recipe.build_model(self.model_spec, self.opts, device=self.device, init=s.model.init,
                                            model_path=self._model_path(), sharded=fsdp)
        self.optimizer = recipe.build_optimizer(self.model, self.opts, lr=s.training.learning_rate,
                                                weight_decay=s.training.weight_decay)
        if sharded:
            self.optimizer = self.accelerator.prepare_optimizer(self.optimizer)
        elif self.accelerator is not None:
            self.model, self.optimizer = self.accelerator.prepare(self.model, self.optimizer)
        self.scheduler = get_scheduler(s.training.lr_scheduler, self.optimizer,
                                       num_warmup_steps=s.training.warmup_steps, num_training_steps=self.total_steps)
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(torch.device(self.device))
        self.load_seconds = time.perf_counter() - t0
        self.trainable_params = sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def _unwrapped(self) -> Any:
        return self.accelerator.unwrap_model(self.model) if self.accelerator is not None else self.model

    def _rng_state(self) -> dict[str, Any]:
        import torch

        state = {"python": random.getstate(), "torch": torch.get_rng_state()}
        if self.device.startswith("cuda"):
            state["cuda"] = torch.cuda.get_rng_state(torch.device(self.device))
        return state

    def _set_rng_state(self, state: dict[str, Any]) -> None:
        import torch

        random.setstate(state["python"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and self.device.startswith("cuda"):
            torch.cuda.set_rng_state(state["cuda"], torch.device(self.device))

    def _state_dicts(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Trainable parameters and optimizer state, full (gathered on rank 0 under FSDP)."""
        if self.world == 1:
            sd = {n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}
            return sd, self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        o = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)
        inner = self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer
        return get_model_state_dict(self.model, options=o), get_optimizer_state_dict(self.model, inner, options=o)

    def _save_checkpoint(self, step: int, rng: dict[str, Any] | None = None) -> Path | None:
        import torch
        from safetensors.torch import save_file

        tmp = ckpt.checkpoints_root(self.out) / f".tmp-step-{step:08d}"
        if self.is_main:
            ckpt.begin_checkpoint(self.out, step)
        self.barrier()
        sd, osd = self._state_dicts()
        if self.is_main:
            save_file(sd, str(tmp / "trainable.safetensors"))
            torch.save(osd, tmp / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            (tmp / "trainer_state.json").write_text(json.dumps(
                {"step": step, "total_steps": self.total_steps, "world_size": self.world,
                 "fingerprint": self.spec.fingerprint(), "train_loss": self.last_loss}, indent=1))
        tmp.mkdir(parents=True, exist_ok=True)  # other nodes' local disks (multi-node wants a shared output dir)
        torch.save(rng or self._rng_state(), tmp / f"rng-rank{self.rank}.pt")
        self.barrier()
        final = None
        if self.is_main:
            final = ckpt.finish_checkpoint(tmp, step, {"fingerprint": self.spec.fingerprint()},
                                           keep=self.spec.output.save_total_limit, log=self.log)
            self.log(f"saved checkpoint {final}")
        self.barrier()
        return final

    def _load_checkpoint(self, path: Path) -> int:
        import torch
        from safetensors.torch import load_file

        state = json.loads((path / "trainer_state.json").read_text())
        if state.get("world_size", 1) != self.world:
            raise CheckpointError(f"{path}: saved by {state.get('world_size')} processes, this run has {self.world}: "
                                  "resume with the same number of GPUs")
        sd = load_file(str(path / "trainable.safetensors"))
        osd = torch.load(path / "optimizer.pt", weights_only=True)
        if self.world == 1:
            trainable = {n for n, p in self.model.named_parameters() if p.requires_grad}
            _missing, unexpected = self.model.load_state_dict(sd, strict=False)
            if unexpected or trainable - set(sd):
                bad = sorted(set(unexpected) | (trainable - set(sd)))[:3]
                raise CheckpointError(f"{path}: its parameters do not match this model ({', '.join(bad)}, ...)")
            self.optimizer.load_state_dict(osd)
        else:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            o = StateDictOptions(full_state_dict=True, strict=False)
            inner = self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer
            set_model_state_dict(self.model, sd, options=o)
            set_optimizer_state_dict(self.model, inner, osd, options=o)
        self.scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
        rng_file = path / f"rng-rank{self.rank}.pt"
        if rng_file.is_file():
            self._set_rng_state(torch.load(rng_file, weights_only=True))
        else:  # a node whose output dir is not shared with rank 0's: dropout masks will differ from here on
            self._log(f"warning: rank {self.rank}: no {rng_file.name} in {path}; random state not restored")
        self.last_loss = state.get("train_loss")
        return int(state["step"])

    # ---- evaluation

    def _evaluate(self, stop: _StopFlag) -> float | None:
        """Token-weighted mean validation loss over the split (None when there is none or a stop came)."""
        import torch

        from ftcalc.train import recipe

        if not self.data.val:
            return None
        self.model.eval()
        loss_sum, tokens = 0.0, 0.0
        try:
            with torch.no_grad(), recipe.autocast(self.opts, self.device):
                for b in self.data.val_batches(self.rank):
                    if self.any_rank(stop.requested):
                        return None
                    b = {k: v.to(self.device) for k, v in b.items()}
                    out = self.model(**b, use_cache=False)
                    n = int((b["labels"][:, 1:] != -100).sum())  # HF shifts labels: the tokens the loss averages
                    loss_sum += float(out.loss) * n
                    tokens += n
        finally:
            self.model.train()
        loss_sum, tokens = self.sum_ranks([loss_sum, tokens])
        return loss_sum / tokens if tokens else None

    # ---- the loop

    def _train(self, start: tuple[int, Path] | None, stop: _StopFlag) -> dict[str, Any]:
        import torch

        from ftcalc.train import recipe

        s = self.spec
        cuda = self.device.startswith("cuda")
        dev = torch.device(self.device)
        self.last_loss: float | None = None
        self._build()
        step = 0
        if start is not None:
            step = self._load_checkpoint(start[1])
            self.log(f"resumed from {start[1]} (step {step} of {self.total_steps})")
        elif self.resume:
            self.log(f"--resume: no complete checkpoint in {self.out}; starting at step 0")
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
            self.after_load = {"allocated": torch.cuda.memory_allocated(dev), "reserved": torch.cuda.memory_reserved(dev)}
        first_step = step
        accum = s.gradient_accumulation_steps
        params = [p for p in self.model.parameters() if p.requires_grad]
        positions_per_step = s.micro_batch_size * s.sequence_len * accum  # per process, padding included
        step_times: list[float] = []
        losses: list[float] = []
        trained_tokens: list[int] = []  # non-padding tokens per step (this process)
        val_loss = None
        status = "completed"
        progress = _Progress(self.total_steps, step, enabled=self.is_main, log=self._log)
        log_file = (self.out / TRAIN_LOG_NAME).open("a") if self.is_main else None
        t_train = time.perf_counter()
        try:
            while step < self.total_steps:
                if self.any_rank(stop.requested):
                    status = "interrupted"
                    break
                rng_at_start = self._rng_state()
                t0 = time.perf_counter()
                micro_losses = []
                step_tokens = 0
                aborted = False
                for k in range(accum):
                    host = self.data.micro_batch(step * accum + k, self.rank)
                    step_tokens += int(host["attention_mask"].sum())  # on the host: no device sync
                    batch = {key: v.to(dev, non_blocking=cuda) for key, v in host.items()}
                    sync = (self.accelerator.no_sync(self.model) if self.accelerator is not None and k < accum - 1
                            else nullcontext())
                    with sync:  # the loss stays on the device until the step is done (no sync mid-step)
                        micro_losses.append(recipe.train_step(
                            self.model, self.optimizer, batch["input_ids"], self.opts, self.device,
                            labels=batch["labels"], attention_mask=batch["attention_mask"],
                            step_optimizer=False, loss_scale=1.0 / accum, as_tensor=True))
                    if k < accum - 1 and self.any_rank(stop.requested):
                        aborted = True  # drop the half-accumulated step; the checkpoint is of the last whole one
                        break
                if aborted:
                    self.optimizer.zero_grad(set_to_none=True)
                    self._set_rng_state(rng_at_start)
                    status = "interrupted"
                    break
                norm = None
                if s.training.max_grad_norm is not None:
                    clip = (self.accelerator.clip_grad_norm_ if self.accelerator is not None
                            else torch.nn.utils.clip_grad_norm_)
                    norm = clip(params, s.training.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                if cuda:
                    torch.cuda.synchronize(dev)
                dt = time.perf_counter() - t0
                step += 1
                # read back after the step: a .item() before optimizer.step() stalls the kernel queue
                grad_norm = None if norm is None else float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
                loss = self.sum_ranks([statistics.fmean(float(v) for v in micro_losses)])[0] / self.world
                self.last_loss = loss
                step_times.append(dt)
                losses.append(loss)
                trained_tokens.append(step_tokens)
                row = {"step": step, "loss": round(loss, 6), "lr": self.scheduler.get_last_lr()[0],
                       "grad_norm": grad_norm, "step_seconds": round(dt, 5),
                       "tokens_per_second": round(positions_per_step / dt, 1),
                       "epoch": round((step * accum) / max(1, self.data.steps_per_epoch * accum), 4)}
                if cuda:
                    row["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(dev)
                if self.stop_after_step == step:
                    raise _SimulatedKill
                if s.training.eval_steps and step % s.training.eval_steps == 0 and step < self.total_steps:
                    row["val_loss"] = val_loss = self._evaluate(stop)
                if log_file:
                    log_file.write(json.dumps(row) + "\n")
                    log_file.flush()
                if step % s.training.logging_steps == 0 or step == self.total_steps:
                    progress.update(step, row, self._memory_text(dev))
                if s.output.save_steps and step % s.output.save_steps == 0 and step < self.total_steps:
                    self._save_checkpoint(step)
            if status == "interrupted":
                self.log(f"stopping at step {step} of {self.total_steps}")
                if step > 0:  # a complete checkpoint of this step, if one exists already, is kept as is
                    self._save_checkpoint(step)
            else:
                val_loss = self._evaluate(stop) if self.data.val else None
                if val_loss is not None and log_file:
                    log_file.write(json.dumps({"step": step, "val_loss": val_loss}) + "\n")
                self._save_final()
        except torch.OutOfMemoryError as e:
            self._finish_report("oom", step, step_times, losses, trained_tokens, val_loss, t_train,
                                error=str(e).splitlines()[0][:300])
            raise TrainingOOMError(
                f"CUDA out of memory at step {step + 1} of {self.total_steps} "
                f"(peak reserved {torch.cuda.max_memory_reserved(dev) / GIB:.2f} GiB): plan again with a smaller "
                f"micro_batch_size, gradient_checkpointing or qlora; report in {self.out / REPORT_NAME}"
            ) from None
        except (_SimulatedKill, KeyboardInterrupt):
            raise
        except Exception as e:
            self._finish_report("failed", step, step_times, losses, trained_tokens, val_loss, t_train,
                                error=f"{type(e).__name__}: {str(e)[:300]}")
            raise
        finally:
            progress.close()
            if log_file:
                log_file.close()
        return self._finish_report(status, step, step_times, losses, trained_tokens, val_loss, t_train,
                                   first_step=first_step, record=status == "completed" and self.record)

    def _memory_text(self, dev: Any) -> str:
        import torch

        if dev.type == "cuda":
            return f"{torch.cuda.max_memory_reserved(dev) / GIB:.2f} GiB reserved"
        import resource

        return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB rss"

    # ---- final artifacts

    def _save_final(self) -> None:
        """final/ (adapter or full model + tokenizer), written to a temp folder and renamed; merged/ if asked."""
        import shutil

        sd = None
        if self.spec.distribution.strategy == "fsdp" and self.accelerator is not None:
            sd = self.accelerator.get_state_dict(self.model)  # gathers the full weights on rank 0
        if not self.is_main:
            self.barrier()
            return
        final = self.out / "final"
        tmp = self.out / ".tmp-final"
        if tmp.exists():
            shutil.rmtree(tmp)
        model = self._unwrapped()
        model.save_pretrained(str(tmp), **({"state_dict": sd} if sd is not None else {}))
        self.tokenizer.save_pretrained(str(tmp))
        (tmp / COMPLETE_FINAL).write_text(json.dumps({"fingerprint": self.spec.fingerprint()}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        self.log(f"saved {'adapter' if self.opts.uses_adapters else 'model'} in {final}")
        if self.spec.output.merge_adapter:
            self._save_merged(final)
        self.barrier()

    def _save_merged(self, final: Path) -> None:
        import shutil

        merged, tmp = self.out / "merged", self.out / ".tmp-merged"
        if tmp.exists():
            shutil.rmtree(tmp)
        if self.spec.method == "qlora":  # reload the base in bf16 on the CPU and merge the saved adapter into it
            import torch
            from peft import PeftModel
            from transformers import AutoModelForCausalLM

            base = AutoModelForCausalLM.from_pretrained(self._model_path() or self.model_spec.id, dtype=torch.bfloat16)
            model = PeftModel.from_pretrained(base, str(final)).merge_and_unload()
        else:
            model = self._unwrapped().merge_and_unload()  # the last use of the trained model
        model.save_pretrained(str(tmp))
        self.tokenizer.save_pretrained(str(tmp))
        if merged.exists():
            shutil.rmtree(merged)
        os.replace(tmp, merged)
        self.log(f"saved the merged model in {merged}")

    # ---- report

    def _base_report(self, tok_name: str, data_path: Path) -> dict[str, Any]:
        s = self.spec
        return {
            "report_version": REPORT_VERSION,
            "status": "running",
            "model": self.model_spec.id,
            "method": s.method,
            "spec_fingerprint": s.fingerprint(),
            "spec_file": str(self.spec_path) if self.spec_path else None,
            "output_dir": str(self.out),
            "dataset": str(data_path),
            "tokenizer": tok_name,
            "device": self.device,
            "world_size": self.world,
            "total_steps": self.total_steps,
            "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "data": {"train_sequences": len(self.data.train), "val_sequences": len(self.data.val),
                     "skipped_lines": len(self.data.skipped), "truncated": self.data.truncated,
                     "steps_per_epoch": self.data.steps_per_epoch},
            "predicted": s.predicted.model_dump(exclude_none=True),
            "preflight": self.preflight,
            "versions": versions(),
        }

    def _write_report(self) -> None:
        if self.is_main:
            _atomic_json(self.out / REPORT_NAME, self.report)

    def _finish_report(self, status: str, step: int, step_times: list[float], losses: list[float],
                       trained_tokens: list[int], val_loss: float | None, t_train: float, error: str | None = None,
                       first_step: int = 0, record: bool = False) -> dict[str, Any]:
        import torch

        s = self.spec
        dev = torch.device(self.device)
        wall = time.perf_counter() - t_train
        n = len(step_times)
        warm = 0 if n <= 1 else (1 if n <= 4 else 2)  # the first steps include allocator and kernel warm-up
        timed = step_times[warm:]
        positions = s.micro_batch_size * s.sequence_len * s.gradient_accumulation_steps  # per process per step
        m: dict[str, Any] = {
            "final_step": step, "steps_this_run": n, "resumed_from_step": first_step or None,
            "train_loss": losses[-1] if losses else self.last_loss, "val_loss": val_loss,
            "load_seconds": round(getattr(self, "load_seconds", 0.0), 3), "train_seconds": round(wall, 3),
            "hours": wall / 3600, "warmup_steps_excluded": warm,
        }
        if timed:
            med = statistics.median(timed)
            m.update(step_seconds_median=round(med, 5), step_seconds_mean=round(statistics.fmean(timed), 5),
                     tokens_per_second=round(positions / med, 1),
                     tokens_per_second_total=round(positions * self.world / med, 1),
                     trained_tokens_per_second=round(sum(trained_tokens[warm:]) / sum(timed), 1),
                     hours_projected=self.total_steps * med / 3600)
        if dev.type == "cuda":
            free, total = torch.cuda.mem_get_info(dev)
            reserved = torch.cuda.memory_reserved(dev)
            stats = torch.cuda.memory_stats(dev)
            peak_reserved = torch.cuda.max_memory_reserved(dev)
            m.update(gpu_name=torch.cuda.get_device_name(dev), gpu_total_bytes=total,
                     peak_allocated_bytes=torch.cuda.max_memory_allocated(dev), peak_reserved_bytes=peak_reserved,
                     non_allocator_bytes=(total - free) - reserved,
                     device_used_bytes=peak_reserved + (total - free) - reserved,
                     num_alloc_retries=int(stats.get("num_alloc_retries", 0)))
        else:
            import resource

            m["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
        pred = s.predicted
        rel: dict[str, float] = {}
        for key, p_val, m_val in (("device_used_bytes", pred.device_used_bytes, m.get("device_used_bytes")),
                                  ("peak_allocated_bytes", pred.peak_allocated_bytes, m.get("peak_allocated_bytes")),
                                  ("peak_reserved_bytes", pred.peak_reserved_bytes, m.get("peak_reserved_bytes")),
                                  ("tokens_per_second", pred.tokens_per_second, m.get("tokens_per_second")),
                                  ("hours", pred.hours, m.get("hours_projected"))):
            if p_val and m_val:
                rel[key] = round((p_val - m_val) / m_val, 4)
        self.report.update(status=status, measured=m, relative_errors=rel, error=error,
                           finished_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                           final_dir=str(self.out / "final") if status == "completed" else None,
                           latest_checkpoint=str(c[1]) if (c := ckpt.latest_checkpoint(self.out)) else None)
        if record and self.is_main:
            from ftcalc.train.records import record_rows

            path = record_rows([self._measurement_row(m, step_times, losses)], self.record_file)
            self.report["recorded_in"] = str(path)
            self.log(f"recorded the measurement in {path}")
        self._write_report()
        if self.is_main:
            line = f"{status}: step {step}/{self.total_steps}"
            if m.get("train_loss") is not None:
                line += f", loss {m['train_loss']:.4f}"
            if val_loss is not None:
                line += f", val loss {val_loss:.4f}"
            if m.get("tokens_per_second"):
                line += f", {m['tokens_per_second']:,.0f} tokens/s per {'GPU' if dev.type == 'cuda' else 'process'}"
            self.log(line + f"; report {self.out / REPORT_NAME}")
        return self.report

    def _measurement_row(self, m: dict[str, Any], step_times: list[float], losses: list[float]) -> dict[str, Any]:
        """One row of the measurement schema (ftcalc/measure/profile.py), from this run."""
        import torch

        from ftcalc.train.records import SCHEMA_VERSION, driver_version, git_commit

        v = versions()
        stamp = _dt.datetime.now(_dt.timezone.utc)
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": f"run-{stamp.strftime('%Y%m%dT%H%M%S')}",
            "model": self.model_spec.id,
            **self.opts.model_dump(mode="json"),
            "gradient_checkpointing": self.opts.checkpointing,
            "steps": len(step_times),
            "warmup_steps": m["warmup_steps_excluded"],
            "outcome": "ok",
            "error": None,
            "gpu_name": m.get("gpu_name"),
            "gpu_total_bytes": m.get("gpu_total_bytes"),
            "device_used_before_model_bytes": (self.preflight or {}).get("total_bytes", 0)
            - (self.preflight or {}).get("free_bytes", 0),
            "date": stamp.isoformat(timespec="seconds"),
            "driver": driver_version(),
            "cuda": torch.version.cuda,
            "versions": {k: v.get(k) for k in ("torch", "transformers", "peft", "accelerate", "bitsandbytes",
                                                "liger-kernel")},
            "python": platform.python_version(),
            "git_commit": git_commit(),
            "source": "ftcalc run",
            "load_seconds": m["load_seconds"],
            "allocated_after_load_bytes": self.after_load["allocated"],
            "reserved_after_load_bytes": self.after_load["reserved"],
            "trainable_params": self.trainable_params,
            "peak_allocated_bytes": m.get("peak_allocated_bytes"),
            "peak_reserved_bytes": m.get("peak_reserved_bytes"),
            "non_allocator_bytes": m.get("non_allocator_bytes"),
            "num_alloc_retries": m.get("num_alloc_retries"),
            "step_seconds": [round(t, 5) for t in step_times],
            "losses": [round(x, 4) for x in losses],
            "device_used_bytes": m.get("device_used_bytes"),
            "step_seconds_median": m.get("step_seconds_median"),
            "tokens_per_second": m.get("tokens_per_second"),
            # what differs from a profile row: real data, accumulation, clipping, schedule, validation
            "data": self.spec.data.format, "gradient_accumulation_steps": self.spec.gradient_accumulation_steps,
        }


COMPLETE_FINAL = "COMPLETE"


class _Progress:
    """A tqdm bar on a terminal, one line per logged step elsewhere (CI logs, pipes)."""

    def __init__(self, total: int, initial: int, enabled: bool, log: Callable[[str], None]):
        self.total, self.enabled, self.log = total, enabled, log
        self.bar = None
        if enabled and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)

    def update(self, step: int, row: dict[str, Any], memory: str) -> None:
        if not self.enabled:
            return
        text = f"loss {row['loss']:.4f} | {row['tokens_per_second']:,.0f} tok/s | {memory}"
        if row.get("val_loss") is not None:
            text += f" | val {row['val_loss']:.4f}"
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(step - self.bar.n)
        else:
            self.log(f"step {step}/{self.total} | {text} | lr {row['lr']:.3g} | {row['step_seconds']:.3f} s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------- several GPUs


def spec_with_absolute_paths(spec: TrainingSpec, spec_path: str | Path | None) -> TrainingSpec:
    """The spec with its relative file paths made absolute (for a copy written elsewhere)."""
    upd_model = {}
    for key in ("base_model", "tokenizer"):
        val = getattr(spec.model, key)
        if val and resolve_path(val, spec_path).exists():
            upd_model[key] = str(resolve_path(val, spec_path).resolve())
    return spec.model_copy(update={
        "model": spec.model.model_copy(update=upd_model),
        "data": spec.data.model_copy(update={"path": str(resolve_path(spec.data.path, spec_path).resolve())}),
    })


def node_rendezvous(hw: Any, environ: Any = None) -> tuple[list[str], int]:
    """torchrun's rendezvous arguments for this node, and the node's rank.

    One node: ``--standalone``. Several: SkyPilot's variables on every node (docs.skypilot.co,
    running-jobs/distributed-jobs): ``SKYPILOT_NODE_IPS`` (one IP a line, the head node first),
    ``SKYPILOT_NUM_NODES``, ``SKYPILOT_NODE_RANK``, ``SKYPILOT_NUM_GPUS_PER_NODE``; the head node's
    ``MASTER_PORT`` (default 29500) hosts torchrun's static rendezvous.
    """
    env = os.environ if environ is None else environ
    if hw.num_nodes == 1:
        return ["--standalone", "--nnodes=1"], 0
    missing = [k for k in ("SKYPILOT_NODE_IPS", "SKYPILOT_NODE_RANK") if not env.get(k)]
    if missing:
        raise InvalidArgumentError(
            f"this spec runs on {hw.num_nodes} nodes but {' and '.join(missing)} is not set: start it with the "
            "SkyPilot task of `ftcalc plan --emit skypilot` (or set SKYPILOT_NODE_IPS, SKYPILOT_NUM_NODES and "
            "SKYPILOT_NODE_RANK on every node)")
    ips = env["SKYPILOT_NODE_IPS"].split()
    nodes = int(env.get("SKYPILOT_NUM_NODES") or len(ips))
    if nodes != hw.num_nodes or len(ips) != nodes:
        raise InvalidArgumentError(f"hardware.num_nodes is {hw.num_nodes} but SkyPilot started {nodes} node(s) with "
                                   f"{len(ips)} IP(s) in SKYPILOT_NODE_IPS; plan again with --num-nodes {nodes}")
    rank = int(env["SKYPILOT_NODE_RANK"])
    if not 0 <= rank < nodes:
        raise InvalidArgumentError(f"SKYPILOT_NODE_RANK {rank}: expected 0 to {nodes - 1}")
    gpus = env.get("SKYPILOT_NUM_GPUS_PER_NODE")
    if hw.device == "cuda" and gpus and int(gpus) != hw.num_gpus:
        raise InvalidArgumentError(f"hardware.num_gpus is {hw.num_gpus} but SKYPILOT_NUM_GPUS_PER_NODE is {gpus}; "
                                   f"plan again with --num-gpus {gpus}")
    port = env.get("MASTER_PORT") or "29500"
    return [f"--nnodes={nodes}", f"--node_rank={rank}", f"--master_addr={ips[0]}", f"--master_port={port}"], rank


def _relaunch(spec: TrainingSpec, spec_path: Path | None, out: Path, *, resume: bool, force: bool, record: bool,
              record_file: str | None, log: Callable[[str], None]) -> dict[str, Any]:
    """Start this node's processes under torchrun (one per GPU; on cpu ``num_gpus`` processes over gloo), forward
    SIGTERM/SIGINT, wait, read the report. Several nodes: :func:`node_rendezvous`."""
    hw = spec.hardware
    rendezvous, node_rank = node_rendezvous(hw)
    if hw.device == "cuda":
        import torch

        have = torch.cuda.device_count()
        if have < hw.num_gpus:
            raise InvalidArgumentError(f"hardware.num_gpus is {hw.num_gpus} but this machine has {have} CUDA GPU(s); "
                                       f"plan again with --num-gpus {max(1, have)}")
    inspect_output_dir(out, spec, resume, spec_path)  # fail here, once, rather than in every process
    with tempfile.TemporaryDirectory(prefix="ftcalc-launch-") as tmp:
        launch_spec = Path(tmp) / "spec.yaml"
        save_spec(spec_with_absolute_paths(spec, spec_path), launch_spec)
        cmd = [sys.executable, "-m", "torch.distributed.run", *rendezvous,
               f"--nproc_per_node={hw.num_gpus}", "-m", "ftcalc.executor", str(launch_spec),
               "--output-dir", str(out.resolve())]
        cmd += ["--resume"] * resume + ["--force"] * force + ["--record"] * record
        if record_file:
            cmd += ["--record-file", record_file]
        where = f" on node {node_rank} of {hw.num_nodes}" if hw.num_nodes > 1 else ""
        log(f"starting {hw.num_gpus} processes{where} ({spec.distribution.strategy}): {' '.join(cmd)}")
        proc = subprocess.Popen(cmd)
        forwarded: list[int] = []

        def forward(signum: int, _frame: Any) -> None:
            forwarded.append(signum)
            proc.send_signal(signum)  # torchrun passes it on to every worker

        old = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            rc = proc.wait()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
    report = _read_report(out)
    if rc == 0 and node_rank > 0 and not report:
        log(f"node {node_rank}: its processes finished; rank 0 (node 0) writes the report to its output dir")
        return {}
    if rc != 0 and forwarded and report.get("status") == "interrupted":
        return report  # torchrun exits non-zero after a signal even when every worker saved and exited 0
    if rc != 0:
        raise RunFailedError(f"the training processes exited with code {rc} (their output above says why); "
                             f"report, if any: {out / REPORT_NAME}")
    return report
