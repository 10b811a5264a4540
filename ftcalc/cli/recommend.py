"""``ftcalc recommend``: the command-line face of ftcalc.solver.search.recommend.

    ftcalc recommend --model 70b --method qlora                          # ranked per million tokens
    ftcalc recommend --model 70b --method qlora --dataset-tokens 100M    # with hours and total cost
    ftcalc recommend --model 8b --method auto --examples 20000 --avg-tokens 600 --deadline 8h --budget 50 --json
    python -m ftcalc.cli.recommend recommend ...      # the same, before the command is wired into ftcalc.cli.main

``add_recommend_parser(subparsers)`` registers the subcommand (``func=cmd_recommend``); ftcalc.cli.main.main
turns an FtcalcError into one line on stderr and exit code 2. Nothing heavy is imported until the
command runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import Any

from ftcalc.sizes import GIB

__all__ = ["add_recommend_parser", "cmd_recommend", "format_recommendation", "main",
           "parse_tokens", "parse_hours", "parse_usd"]

WIDTH = 80


def parse_tokens(text: str) -> int:
    """'100M' -> 100_000_000; '2.5B', '50k', '1e8', plain integers (ftcalc.validation.tokens)."""
    from ftcalc.validation import cli_tokens

    return cli_tokens(text)


def parse_hours(text: str) -> float:
    """'8h', '90m', '2d', '1.5h', '45min', '8' (hours) -> hours (ftcalc.validation.hours)."""
    from ftcalc.validation import cli_hours

    return cli_hours(text)


def parse_usd(text: str) -> float:
    """'100', '$100', '100usd', '1,500' -> US dollars (ftcalc.validation.usd)."""
    from ftcalc.validation import cli_usd

    return cli_usd(text)


def add_recommend_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``recommend`` on an ``add_subparsers()`` object; the parser's ``func`` is cmd_recommend."""
    from ftcalc.model.options import DEFAULTS

    p = subparsers.add_parser(
        "recommend", help="cheapest (or fastest) GPUs, instance and settings to fine-tune a model on a dataset",
        description="Rank real instance shapes x method x micro-batch x grad-accum x checkpointing x sharding "
                    "by cost or time. Memory per GPU in GiB (2^30 bytes); prices in USD, billed as the provider "
                    "bills (granularity, minimum).")
    p.add_argument("--model", help="catalog id or alias (see `ftcalc models`), a config.json, or a hub id")
    p.add_argument("--method", choices=["full", "lora", "qlora", "auto"], default="lora",
                   help="fine-tuning method; auto ranks all three by the objective alone (default lora)")
    data = p.add_argument_group("dataset (tokens per epoch, packed)")
    data.add_argument("--dataset-tokens", type=parse_tokens,
                      help="tokens per epoch: 100M, 2.5B, 50000 (without a size, plans are ranked per million tokens)")
    data.add_argument("--examples", type=int, help="number of examples (with --avg-tokens)")
    data.add_argument("--avg-tokens", type=float, help="mean tokens per example (truncated at --seq-len)")
    p.add_argument("--epochs", type=float, default=1.0, help="passes over the data (default 1)")
    p.add_argument("--seq-len", type=int, default=2048, help="tokens per sequence (default 2048)")
    p.add_argument("--global-batch", type=int, default=None, dest="global_batch_size",
                   help="sequences per optimizer step; grad-accum reaches it (default 16)")
    c = p.add_argument_group("constraints")
    c.add_argument("--gpu", action="append", help="GPU(s) to consider: h100, h200,a100 (repeat or comma list)")
    c.add_argument("--provider", action="append", help="provider(s): runpod, lambda, aws, ... (repeat or comma list)")
    c.add_argument("--max-gpus", type=int, default=8, help="most GPUs per plan (default 8)")
    c.add_argument("--spot", action="store_true", help="spot / interruptible prices")
    c.add_argument("--deadline", type=parse_hours, help="finish within: 8h, 90m, 2d")
    c.add_argument("--budget", type=parse_usd, help="spend at most, USD: 100")
    p.add_argument("--objective", choices=["cost", "time"], default="cost", help="rank by cost (default) or time")
    p.add_argument("--top", type=int, default=5, help="plans to show (default 5)")
    p.add_argument("--headroom", type=float, default=0.05, help="share of GPU memory kept free (default 0.05)")
    p.add_argument("--optimizer", default="adamw_torch", help="as in `ftcalc estimate` (default adamw_torch)")
    p.add_argument("--precision", default="bf16-true", help="as in `ftcalc estimate` (default bf16-true)")
    p.add_argument("--lora-r", type=int, default=DEFAULTS.lora_r, help=f"LoRA rank (default {DEFAULTS.lora_r})")
    p.add_argument("--prices", help="a price file replacing data/prices.csv (same columns, or a SkyPilot vms.csv)")
    p.add_argument("--json", action="store_true", help='one JSON object: {"plans": [...], "rejected": [...], ...}')
    p.add_argument("--plot", help="write the cost-vs-time Pareto plot of the plans (PNG, SVG or PDF; [plot] extra)")
    p.add_argument("--force", action="store_true", help="replace an existing --plot file that ftcalc did not write")
    from ftcalc.integrations.from_flag import add_from_argument, track_explicit_flags

    add_from_argument(p)
    p.set_defaults(func=cmd_recommend)
    track_explicit_flags(p)
    return p


def cmd_recommend(a: argparse.Namespace) -> int:
    from ftcalc.solver.search import recommend

    if getattr(a, "from_files", None):  # the trainer's config as defaults; typed flags win
        from ftcalc.integrations.from_flag import apply_to_recommend

        apply_to_recommend(a)
    elif not a.model:
        from ftcalc.errors import InvalidArgumentError

        raise InvalidArgumentError("--model is required (or --from FILE, a trainer's config that names the model)")
    if getattr(a, "plot", None):  # before any work: the extra, and a path that may be written
        from ftcalc.extras import require_extra
        from ftcalc.safe_write import PLOT_FORMATS, PLOT_MARKERS, check_output

        require_extra("plot", "--plot")
        check_output(a.plot, marker=PLOT_MARKERS, inputs=[a.model, a.prices], force=a.force, what="plot",
                     suffixes=PLOT_FORMATS)

    rec = recommend(
        a.model, method=a.method, dataset_tokens=a.dataset_tokens, examples=a.examples, avg_tokens=a.avg_tokens,
        epochs=a.epochs, seq_len=a.seq_len, gpu=a.gpu, provider=a.provider, max_gpus=a.max_gpus, spot=a.spot,
        deadline_hours=a.deadline, budget_usd=a.budget, objective=a.objective, top=a.top, headroom=a.headroom,
        global_batch_size=a.global_batch_size, optimizer=a.optimizer, precision=a.precision, lora_r=a.lora_r,
        prices=a.prices)
    if getattr(a, "plot", None):
        from ftcalc.viz.plots import plot_pareto, save

        save(plot_pareto(rec), a.plot, force=a.force, inputs=(a.model, a.prices))
    if a.json:
        print(json.dumps(rec.to_dict(), indent=2))
    else:
        print(format_recommendation(rec))
        if getattr(a, "plot", None):
            print(f"plot written to {a.plot}")
    return 0


def _tokens(n: float) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def _wrap(text: str, indent: str = "    ") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=" " * len(indent) + "  ")


def format_recommendation(rec: Any) -> str:
    """The plans as a table readable at 80 columns (two lines per plan), then the rejected and notes."""
    from ftcalc.solver import search as solver

    prices = "spot" if rec.spot else "on-demand"
    cons = []
    if rec.deadline_hours is not None:
        cons.append(f"deadline {rec.deadline_hours:g} h")
    if rec.budget_usd is not None:
        cons.append(f"budget ${rec.budget_usd:,.2f}")
    sized = rec.dataset_tokens is not None
    data = (f"{_tokens(rec.dataset_tokens)} tokens x {rec.epochs:g} epoch(s)" if sized
            else "no dataset size (cost per million tokens)")
    lines = _wrap(f"{rec.model}, {rec.method}, {data}, "
                  f"seq {rec.seq_len}, global batch {rec.global_batch_size} sequences; {prices} prices, ranked by "
                  f"{rec.objective}" + (f"; {', '.join(cons)}" if cons else ""), indent="")
    lines += [
        "",
        f"{'#':>2}  {'provider instance':<32} {'GPUs (of paid)':<21} {'hours':>7} {'cost USD':>11}" if sized else
        f"{'#':>2}  {'provider instance':<32} {'GPUs (of paid)':<21} {'USD/h':>7} {'USD/Mtok':>11}",
        f"{'':2}  {'method':<6} {'batch x accum':<13} {'ckpt':<4} {'sharding':<12} {'GiB/GPU used/total':>18}"
        f" {'tokens/s':>9}",
        "-" * 79,
    ]
    for p in rec.plans:
        paid = f" of {p.gpus_paid}" if p.gpus_paid > p.num_gpus else ""
        gpus = f"{p.num_gpus}{paid}x {p.gpu}"
        where = f"{p.provider} {p.instance_type}"
        if sized:
            lines.append(f"{p.rank:>2}  {where[:32]:<32} {gpus[:21]:<21} {p.est_hours:>7.1f} {p.est_cost_usd:>11,.2f}")
        else:
            lines.append(f"{p.rank:>2}  {where[:32]:<32} {gpus[:21]:<21} {p.usd_per_hour:>7.2f} "
                         f"{p.usd_per_million_tokens:>11,.3f}")
        mem = f"{p.device_used_bytes / GIB:.1f} / {p.gpu_memory_bytes / GIB:.1f}"
        lines.append(f"{'':2}  {p.method:<6} {f'{p.micro_batch_size} x {p.grad_accum}':<13} "
                     f"{'on' if p.gradient_checkpointing else 'off':<4} {p.sharding:<12} {mem:>18} "
                     f"{p.tokens_per_second:>9,.0f}")
        for note in p.notes:
            if note != solver.MULTI_GPU_NOTE:  # said once, in the footer
                lines += _wrap(note, indent="      ")
    if rec.rejected:
        lines += ["", f"Left out, though {'cheaper' if rec.objective == 'cost' else 'faster'}:"]
        for r in rec.rejected:
            lines += _wrap(r.reason, indent="  - ")
    lines += [""]
    foot = ("GiB = 2^30 bytes, GB = 10^9 bytes; hours include start-up and checkpoint saves; cost is every "
            "rented instance for that time, billed as the provider bills." if sized else
            "GiB = 2^30 bytes; USD/Mtok = price per hour / trained tokens per hour x 10^6 (training alone: no "
            "start-up, checkpoint saves or billing minimum).")
    foot += " Multi-GPU figures are validated on 2x, 4x and 8xH200 only (docs/multi-gpu.md)."
    lines += textwrap.wrap(foot, WIDTH)
    for note in rec.notes:
        if note != solver.DATASET_HINT:
            lines += textwrap.wrap("Note: " + note, WIDTH)
    lines += textwrap.wrap(f"Coefficients: {rec.coefficients}", WIDTH)
    if not sized:
        lines.append("Hours and total cost: add --dataset-tokens (e.g. --dataset-tokens 100M).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m ftcalc.cli.recommend recommend ...``: the same exit codes as ftcalc.cli.main.main."""
    from ftcalc.cli.common import run_with_errors

    parser = argparse.ArgumentParser(prog="ftcalc")
    add_recommend_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return run_with_errors(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
