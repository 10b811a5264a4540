"""``--from FILE``: the trainer's config as the base of ``ftcalc estimate`` / ``ftcalc fit``, flags on top.

    ftcalc estimate --from qlora.yml --seq-len 8192 --gpu h100     # the file, with a longer sequence

A flag the user typed overrides the file; a flag left at its default does not. argparse fills defaults in
before parsing, so which flags were typed is recorded by the actions themselves (:func:`track_explicit_flags`).
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_from_argument", "track_explicit_flags", "explicit_flags", "options_from_args", "print_from_report",
           "apply_to_recommend", "apply_to_namespace"]

# CLI dests that are TrainingOptions fields (ftcalc/cli/main.py _add_training_options)
OPTION_DESTS = ("method", "seq_len", "batch_size", "gradient_accumulation_steps", "gradient_checkpointing",
                "optimizer", "precision", "lora_r", "lora_alpha", "lora_dropout", "lora_targets", "attention", "loss",
                "num_gpus")
_EXPLICIT = "_ftcalc_explicit_flags"


def add_from_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="from_files", action="append", metavar="FILE",
                   help="read the training options from a trainer's config: axolotl or LLaMA-Factory YAML, TRL "
                        "SFTConfig / TrainingArguments dump (JSON/YAML); repeat for a peft LoraConfig or "
                        "BitsAndBytesConfig. Flags given as well override the file (docs/trainers.md)")


def track_explicit_flags(p: argparse.ArgumentParser) -> None:
    """Make every option action of ``p`` record its dest in the namespace when the user types it."""
    for action in p._actions:  # argparse's public-in-practice list of actions
        if not action.option_strings or action.dest in ("help", "from_files"):
            continue
        base = type(action)

        def __call__(self: Any, parser: Any, namespace: Any, values: Any, option_string: Any = None,
                     _base: Any = base) -> None:
            seen = set(getattr(namespace, _EXPLICIT, ()))
            seen.add(self.dest)
            setattr(namespace, _EXPLICIT, seen)
            _base.__call__(self, parser, namespace, values, option_string)

        action.__class__ = type(base.__name__, (base,), {"__call__": __call__})


def explicit_flags(a: argparse.Namespace) -> set[str]:
    return set(getattr(a, _EXPLICIT, ()))


def options_from_args(a: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(model spec, TrainingOptions, TrainerConfig) from ``--from`` files with the typed flags on top."""
    from ftcalc.integrations.trainer_config import read_trainer_config, resolve_from

    tc = read_trainer_config(a.from_files)
    typed = explicit_flags(a)
    overrides = {d: getattr(a, d) for d in OPTION_DESTS if d in typed}
    for d in overrides:
        tc.mapped[d] = f"--{d.replace('_', '-')} (flag, overrides the file)"
    if "seq_len" in overrides:
        tc.assumptions = [s for s in tc.assumptions if not s.startswith("no sequence length")]
    opts = tc.make_options(**overrides)
    spec = resolve_from(tc, a.model)
    return spec, opts, tc


def print_from_report(tc: Any) -> None:
    """What was read from the files: mapped keys, assumptions, keys not modelled, unknown keys."""
    print(f"from {', '.join(tc.paths)} ({tc.tool}):")
    for opt, src in tc.mapped.items():
        print(f"  {opt:28s} <- {src}")
    for s in tc.assumptions:
        print(f"  assumed: {s}")
    for s in tc.not_modelled:
        print(f"  not modelled: {s}")
    if tc.unknown:
        print(f"  unknown keys (not read): {', '.join(tc.unknown)}")
    print()


def apply_to_recommend(a: argparse.Namespace) -> Any:
    """``ftcalc recommend --from FILE``: model, method, sequence length, optimizer, precision, LoRA rank and the
    global batch (micro-batch x accumulation x GPUs) from the file, where not typed; the solver still searches
    micro-batch, accumulation, checkpointing and GPU count itself."""
    from ftcalc.integrations.trainer_config import read_trainer_config

    tc = read_trainer_config(a.from_files)
    typed = explicit_flags(a)
    o = tc.make_options()
    if not a.model:
        from ftcalc.integrations.trainer_config import resolve_from

        a.model = resolve_from(tc, None).id
    for dest, value in (("method", o.method), ("seq_len", o.seq_len), ("optimizer", o.optimizer),
                        ("precision", o.precision), ("lora_r", o.lora_r),
                        ("global_batch_size", o.batch_size * o.gradient_accumulation_steps * o.num_gpus)):
        if dest not in typed:
            setattr(a, dest, value)
    from ftcalc.model.options import TrainingOptions

    default = TrainingOptions()
    ignored = [f"{k}={getattr(o, k)}" for k in ("attention", "loss", "lora_alpha", "lora_targets", "quant_type",
                                                  "double_quant") if getattr(o, k) != getattr(default, k)]
    if ignored:
        tc.not_modelled.append(f"{', '.join(ignored)}: `ftcalc recommend` does not take these; it ranks with "
                               "ftcalc's defaults (use `ftcalc estimate --from` for this exact configuration)")
    if not getattr(a, "json", False):
        print_from_report(tc)
    return tc


def apply_to_namespace(a: argparse.Namespace, dests: tuple[str, ...] = OPTION_DESTS + ("quant_type", "double_quant")) -> Any:
    """``ftcalc plan --from FILE``: every training option the file maps, and its model, set on the parsed flags
    where the user did not type them (the plan then runs ftcalc's own recipe with those options)."""
    from ftcalc.integrations.trainer_config import read_trainer_config, resolve_from

    tc = read_trainer_config(a.from_files)
    typed = explicit_flags(a)
    if not a.model:
        a.model = resolve_from(tc, None).id
    o = tc.make_options()
    for dest in dests:
        if dest not in typed and hasattr(a, dest) and dest in tc.options:
            value = getattr(o, dest)
            setattr(a, dest, ",".join(value) if dest == "lora_targets" else value)
    if not getattr(a, "json", False) and getattr(a, "output", None):
        print_from_report(tc)
    return tc
