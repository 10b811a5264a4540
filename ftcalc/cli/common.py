"""What every ``ftcalc`` subcommand module shares: running a parsed command with the one error policy
(a user error is one line on stderr and exit code 2), the coefficients flag, boolean flags and the token
parser. The dispatcher (ftcalc/cli/main.py) and each command module import from here; no command module
imports the dispatcher.

    from ftcalc.cli.common import run_with_errors
"""

from __future__ import annotations

import argparse
import sys

from ftcalc.errors import FtcalcError


def parse_tokens_flag(text: str) -> int:
    """'100M' -> 100_000_000 (ftcalc.validation.tokens, which the Python API takes too)."""
    from ftcalc.validation import cli_tokens

    return cli_tokens(text)


def check_coefficients() -> None:
    """A coefficients file the user chose (--coefficients, FTCALC_COEFFICIENTS) must exist."""
    import os

    from ftcalc._paths import _COEFFICIENTS, coefficients_file
    from ftcalc.errors import ConfigError

    if (_COEFFICIENTS.get() or os.environ.get("FTCALC_COEFFICIENTS")) and not coefficients_file().is_file():
        raise ConfigError(f"{coefficients_file()}: no such coefficients file (write one with `ftcalc calibrate`, "
                          "or drop --coefficients for the shipped one)")


def add_coefficients_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--coefficients", metavar="FILE",
                   help="coefficients file (from `ftcalc calibrate --out`); 'user' for the one it writes by default; "
                        "default the shipped data/coefficients.json (FTCALC_COEFFICIENTS overrides)")


def run_with_errors(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse and run a command; a user error (FtcalcError) is one line on stderr and exit code 2.

    Shared by ``ftcalc`` and the stand-alone entry points (``python -m ftcalc.cli.recommend``, ...).
    """
    from ftcalc.validation import cli_spelling, install_cli_checks

    install_cli_checks(parser)  # every numeric flag finite and >= 0 (ftcalc/validation.py)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: usage errors exit 2 with one line already printed
        return int(e.code or 0)
    from ftcalc._paths import use_coefficients

    token = use_coefficients(getattr(args, "coefficients", None))
    try:
        with cli_spelling():  # messages name --flags, not Python parameters
            check_coefficients()
            return args.func(args)
    except FtcalcError as e:
        print(f"ftcalc: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `ftcalc models | head`: the reader left; not an error
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # a path the user gave that cannot be read or written: one line with the path
        if e.filename is None:
            raise
        print(f"ftcalc: error: {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 2
    finally:
        from ftcalc._paths import _COEFFICIENTS

        _COEFFICIENTS.reset(token)


def bool_flag(p: argparse.ArgumentParser, name: str, help_: str, default: bool | None = None) -> None:
    p.add_argument(f"--{name}", dest=name.replace("-", "_"), action=argparse.BooleanOptionalAction,
                   default=default, help=help_)
