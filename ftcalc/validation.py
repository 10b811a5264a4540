"""One check for every number a user gives ftcalc, shared by the command line and the Python API.

    from ftcalc.validation import tokens, positive_float
    tokens("50M", "dataset_tokens")        # 50_000_000, as ``--dataset-tokens 50M`` gives
    positive_float(float("nan"), "epochs")  # InvalidArgumentError: epochs=nan: expected a finite number > 0

Every check raises :class:`~ftcalc.errors.InvalidArgumentError` with one line that names the parameter
as the caller spelled it: ``epochs`` from Python, ``--epochs`` from the command line (the CLI sets
:data:`SPELLING` while a command runs, see :func:`cli_spelling`). Nothing here imports more than the
standard library.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import math
import re
from collections.abc import Iterator
from typing import Any

from ftcalc.errors import InvalidArgumentError

__all__ = ["SPELLING", "cli_spelling", "param", "finite_float", "positive_float", "non_negative_float", "share",
           "positive_int", "non_negative_int", "tokens", "epochs", "MAX_EPOCHS", "hours", "usd", "install_cli_checks",
           "MAX_GPUS_PER_NODE", "MAX_GPUS_PER_PLAN"]

# "api" (Python names, ``seq_len``) or "cli" (flags, ``--seq-len``); ftcalc.cli.main.run_with_errors sets "cli"
SPELLING: contextvars.ContextVar[str] = contextvars.ContextVar("ftcalc_spelling", default="api")

# The most GPUs one node holds among the shapes ftcalc prices and plans (data/prices.csv: 8 per instance is the
# largest, e.g. AWS p5.48xlarge = 8x H100); 16 leaves room for 16-GPU HGX-2-class nodes. ``num_gpus`` counts
# GPUs of one node, so more than this is a typo, not a plan.
MAX_GPUS_PER_NODE = 16

# What the CLI's flags may not be: every numeric flag is finite and >= 0 (none of ftcalc's flags has a
# meaning below zero); these must also be > 0 (argparse ``dest`` names).
_POSITIVE_DESTS = frozenset({
    "seq_len", "batch_size", "gradient_accumulation_steps", "lora_r", "lora_alpha", "num_gpus", "num_nodes",
    "epochs", "num_epochs", "global_batch_size", "max_gpus", "top", "steps", "examples", "avg_tokens",
    "max_steps", "save_steps", "save_total_limit", "from_recommendation", "learning_rate",
})


# Upper bounds past which a value is a typo, not a plan (and products of it overflow): a million passes over the
# data; seeds as numpy's RandomState takes them (< 2^32); a learning rate above 10 diverges in any optimizer here
MAX_EPOCHS = 1_000_000
# most GPUs a recommended plan may span: beyond the largest training clusters built (about 10^5 GPUs); a larger
# count is a typo, and its byte counts would leave the allocator simulation's address range
MAX_GPUS_PER_PLAN = 2**17
_UPPER = {"epochs": MAX_EPOCHS, "num_epochs": MAX_EPOCHS, "seed": 2**32 - 1, "learning_rate": 10.0, "lora_r": 65536,
          "max_gpus": MAX_GPUS_PER_PLAN}


@contextlib.contextmanager
def cli_spelling() -> Iterator[None]:
    """Within this block, messages name parameters as command-line flags (``--seq-len``)."""
    token = SPELLING.set("cli")
    try:
        yield
    finally:
        SPELLING.reset(token)


def param(name: str) -> str:
    """``seq_len`` as the caller spells it: ``seq_len`` from Python, ``--seq-len`` from the command line."""
    return "--" + name.replace("_", "-") if SPELLING.get() == "cli" else name


def _bad(name: str, value: Any, expected: str) -> InvalidArgumentError:
    shown = value if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)
    sep = " " if SPELLING.get() == "cli" else "="
    return InvalidArgumentError(f"{param(name)}{sep}{shown}: expected {expected}")


def finite_float(value: Any, name: str, *, gt: float | None = None, ge: float | None = None,
                 lt: float | None = None, le: float | None = None, expected: str | None = None) -> float:
    """``value`` as a finite float within the given bounds, else InvalidArgumentError naming ``name``."""
    bounds = [f"> {gt:g}" if gt is not None else "", f">= {ge:g}" if ge is not None else "",
              f"< {lt:g}" if lt is not None else "", f"<= {le:g}" if le is not None else ""]
    want = expected or ("a finite number " + " and ".join(b for b in bounds if b)).strip()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise _bad(name, value, want) from None
        else:
            raise _bad(name, value, want)
    v = float(value) if not isinstance(value, int) else value
    if isinstance(v, float) and not math.isfinite(v):
        raise _bad(name, value, want)
    if (gt is not None and not v > gt) or (ge is not None and not v >= ge) or \
            (lt is not None and not v < lt) or (le is not None and not v <= le):
        raise _bad(name, value, want)
    return float(v)


def positive_float(value: Any, name: str) -> float:
    return finite_float(value, name, gt=0)


def epochs(value: Any, name: str = "epochs") -> float:
    """Passes over the data: a finite number > 0 and at most MAX_EPOCHS."""
    return finite_float(value, name, gt=0, le=MAX_EPOCHS)


def non_negative_float(value: Any, name: str) -> float:
    return finite_float(value, name, ge=0)


def share(value: Any, name: str) -> float:
    """A share of something in [0, 1), such as headroom."""
    return finite_float(value, name, ge=0, lt=1, expected="a share in [0, 1), e.g. 0.05")


def _int(value: Any, name: str, low: int, high: int | None, want: str) -> int:
    if isinstance(value, bool):
        raise _bad(name, value, want)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        value = int(value)
    if not isinstance(value, int) or value < low or (high is not None and value > high):
        raise _bad(name, value, want)
    return value


def positive_int(value: Any, name: str, high: int | None = None) -> int:
    return _int(value, name, 1, high, "an integer >= 1" + (f" and <= {high}" if high is not None else ""))


def non_negative_int(value: Any, name: str) -> int:
    return _int(value, name, 0, None, "an integer >= 0")


_TOKEN_MULT = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
# more tokens than this is a typo: 10^15 is ~70x the 15T tokens Llama 3 was pre-trained on (Meta, 2024)
MAX_TOKENS = 10**15


def tokens(value: Any, name: str = "dataset_tokens") -> int:
    """A token count: an int, or text such as '100M', '2.5B', '50k', '1e8', '1,000,000' (as the CLI takes it)."""
    want = "a token count > 0 such as 100M, 2.5B or 50000"
    if isinstance(value, bool):
        raise _bad(name, value, want)
    if isinstance(value, str):
        t = value.strip().lower().replace("_", "").replace(",", "")
        try:
            val = float(t[:-1]) * _TOKEN_MULT[t[-1]] if t and t[-1] in _TOKEN_MULT else float(t)
        except ValueError:
            raise _bad(name, value, want) from None
    elif isinstance(value, (int, float)):
        val = value
    else:
        raise _bad(name, value, want)
    if not (math.isfinite(val) and 1 <= val <= MAX_TOKENS):
        raise _bad(name, value, f"a token count from 1 to {MAX_TOKENS:.0e} such as 100M or 2.5B")
    return int(val)


def hours(value: Any, name: str = "deadline_hours") -> float:
    """A duration in hours: a number, or text such as '8h', '90m', '2d', '45min'."""
    want = "a duration > 0 such as 8h, 90m or 2d"
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*(h|hr|hrs|hours?|m|min|mins|minutes?|d|days?)?\s*",
                         value.lower())
        if not m:
            raise _bad(name, value, want)
        val = float(m.group(1))
        unit = (m.group(2) or "h")[0]
        val = val / 60.0 if unit == "m" else val * 24.0 if unit == "d" else val
        if not (math.isfinite(val) and val > 0):
            raise _bad(name, value, want)
        return val
    return finite_float(value, name, gt=0, expected=want)


def usd(value: Any, name: str = "budget_usd") -> float:
    """An amount in US dollars: a number, or text such as '100', '$100', '100usd', '1,500'."""
    want = "an amount in US dollars > 0 such as 100"
    if isinstance(value, str):
        t = value.strip().lower().replace(",", "").lstrip("$").removesuffix("usd").strip()
        try:
            value = float(t)
        except ValueError:
            raise _bad(name, value, want) from None
    return finite_float(value, name, gt=0, expected=want)


# --------------------------------------------------------------------------- the command line's side


def _checked(kind: type, dest: str) -> Any:
    """An argparse ``type=`` that parses ``kind`` and refuses NaN, inf and negatives (and zero for the
    flags in _POSITIVE_DESTS); argparse turns the ArgumentTypeError into one line naming the flag."""

    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not {'an integer' if kind is int else 'a number'}") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"'{text}': expected a finite number")
        if dest in _POSITIVE_DESTS and not v > 0:
            raise argparse.ArgumentTypeError(f"'{text}': must be > 0")
        if not v >= 0:
            raise argparse.ArgumentTypeError(f"'{text}': must be >= 0")
        if dest in _UPPER and v > _UPPER[dest]:
            raise argparse.ArgumentTypeError(f"'{text}': must be <= {_UPPER[dest]}")
        return v

    parse.__name__ = kind.__name__  # argparse names the type in "invalid <type> value"
    return parse


def _wrap_parser(fn: Any) -> Any:
    """A unit parser (tokens, hours, usd) as an argparse ``type=``."""

    def parse(text: str) -> Any:
        try:
            return fn(text, "value")
        except InvalidArgumentError as e:
            want = str(e).split(": expected ", 1)[-1]
            raise argparse.ArgumentTypeError(f"'{text}' is not {want}") from None

    parse.__name__ = fn.__name__
    return parse


cli_tokens = _wrap_parser(tokens)
cli_hours = _wrap_parser(hours)
cli_usd = _wrap_parser(usd)


def install_cli_checks(parser: argparse.ArgumentParser) -> None:
    """Give every ``type=int`` / ``type=float`` option of ``parser`` and its subcommands the checks above."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                install_cli_checks(sub)
        elif action.type in (int, float):
            action.type = _checked(action.type, action.dest)


def read_json_file(path: Any, what: str) -> Any:
    """A JSON file's content, or one ConfigError line naming the file (malformed, not text, unreadable)."""
    import json

    from ftcalc.errors import ConfigError

    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: malformed JSON at line {e.lineno} column {e.colno} ({e.msg})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a {what} (not UTF-8 text)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None

