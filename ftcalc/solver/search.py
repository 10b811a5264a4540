"""The plan solver: the cheapest (or fastest) way to fine-tune a model on a dataset, from real instance shapes.

    ftcalc recommend --model 70b --method qlora --dataset-tokens 100M --deadline 48h --budget 200

    import ftcalc.solver.search
    rec = ftcalc.solver.search.recommend("70b", method="qlora", dataset_tokens=100_000_000)
    rec.plans[0].instance_type, rec.plans[0].est_cost_usd, rec.to_dataframe()

What it does:

1. Configurations: method (full/lora/qlora, all three for ``method="auto"``) x micro-batch (1, 2, 4, 8,
   16) x gradient checkpointing on/off: one ftcalc.model.memory.estimate_memory call each (unconstrained
   reserved pool), and per GPU type one ftcalc.model.throughput call with and one without the optimizer
   update (so the update is counted once per optimizer step, not once per micro-batch). A few dozen
   memory calls, a few hundred throughput calls.
2. Offers: for each GPU type and GPU count (powers of two up to ``max_gpus``, and ``max_gpus``), each
   provider's cheapest real way to rent that many (ftcalc.tables.pricing.cheapest_instances: AWS p5 sells 8
   H100s or 1, so 2 GPUs pay for 8).
3. Candidates = configurations x sharding (single GPU; DDP, FSDP full-shard, FSDP + CPU offload for
   several) x offers, evaluated at once with numpy (ftcalc.model.sharding): memory per GPU, step time, hours,
   billed cost. A candidate fits when its device memory per GPU <= GPU memory x (1 - headroom). CPU
   offload is a last resort: it is dropped when anything fits without it.
4. Gradient accumulation reaches the target global batch: ``global_batch_size`` sequences (default 16,
   a common fine-tuning batch: the io.net guide of docs/seed-scenarios.md, seed 003, uses 4 x 4), or ``global_batch_tokens`` / seq_len;
   grad_accum = ceil(target / (micro-batch x GPUs)). A micro-batch larger than the target is skipped
   (except 1 with many GPUs, whose global batch is then the GPU count).
5. Time: optimizer steps = ceil(epochs x dataset tokens / (global batch x seq_len)) (packed sequences,
   no padding); each step as in ftcalc.model.sharding.step_seconds_parallel; plus start-up (provisioning,
   checkpoint download and load) and checkpoint saves (data/solver_assumptions.json). Cost: every rented
   instance for the whole runtime, rounded up to the provider's billing granularity and minimum
   (prices.csv), exactly as ftcalc.tables.pricing.InstanceChoice.cost_usd.
6. Keep what fits and meets ``deadline_hours`` / ``budget_usd``; per offer the best configuration; rank
   by cost (then time) or time (then cost). ``rejected`` says why cheaper offers were left out.
7. Without a dataset size, plans are ranked by ``usd_per_million_tokens`` (price per hour over trained tokens
   per hour; objective cost) or tokens/s (objective time); hours and total cost need ``dataset_tokens``.

The allocator simulations (full fine-tuning on one GPU and one DDP rank, every FSDP sequence) are the cold
cost, 0.05-0.5 s each. They are screened (``SCREEN``, _Candidates.settle): memory is first evaluated with every
unsimulated fragmentation gap at 0, a lower bound; only candidates that may fit and may be their offer's choice
are simulated, and a non-fitting candidate's bytes only where a message quotes them. The result equals the
exhaustive evaluation (tests/solver/test_screening.py, 34 queries).

``method="auto"`` chooses by cost or time alone: it does not weigh the quality difference between full
fine-tuning, LoRA and QLoRA. Multi-GPU memory and time are validated on 2x, 4x and 8xH200 only (docs/multi-gpu.md);
more GPUs and several nodes are not measured, CPU offload on 2xH200 only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from ftcalc._paths import coefficients_label
from ftcalc.errors import DoesNotFitError, InvalidArgumentError
from ftcalc.model import sharding as sh
from ftcalc.model.grid import SIMULATED_GAPS, config_grid, micro_batch_times, simulated_gap  # noqa: F401
from ftcalc.model.memory import (
    load_coefficients,
)
from ftcalc.model.options import DEFAULTS, METHODS, TrainingOptions, make_options
from ftcalc.model.throughput import StepParts, host_note
from ftcalc.sizes import GB, GIB
from ftcalc.tables.catalog import ModelSpec, resolve_model
from ftcalc.tables.hardware import GPU, get_gpu, load_gpus
from ftcalc.tables.inventory import inventory
from ftcalc.tables.pricing import (
    PriceRow,
    UnknownProviderError,  # noqa: F401
    cheapest_instances,
    load_prices,
)

__all__ = ["recommend", "Recommendation", "Plan", "Rejected", "UnknownProviderError", "MICRO_BATCH_SIZES"]

MICRO_BATCH_SIZES = (1, 2, 4, 8, 16)
DEFAULT_GLOBAL_BATCH = 16  # sequences per optimizer step (module docstring, point 4)
# Within an offer, a simpler sharding whose objective is at most this much worse is preferred: the time
# model's error (data/calibration_report.md) is larger, and DDP/FSDP carry overheads it does not model.
SIMPLER_WITHIN = 0.02
DATASET_HINT = ("no dataset size: plans ranked per million trained tokens; add --dataset-tokens (e.g. 100M; "
                "dataset_tokens= in Python) for hours and total cost")
# Simulate the allocator only for the candidates whose verdict or quoted bytes depend on it (_Candidates); False:
# every candidate's gaps up front, the exhaustive evaluation (tests/solver/test_screening.py compares the two)
SCREEN = True
MULTI_GPU_NOTE = "multi-GPU memory and time validated on 2x, 4x and 8xH200 only (docs/multi-gpu.md)"


class Plan(BaseModel):
    """One ranked way to run the job. Bytes are per GPU; tokens_per_second is for all GPUs together."""

    model_config = ConfigDict(frozen=True)

    rank: int
    provider: str
    instance_type: str
    region: str
    basis: str  # list | quote (a guide's price, not checked against the provider's list)
    gpu: str
    num_gpus: int  # GPUs the plan trains on
    gpus_paid: int  # GPUs rented (whole instances)
    num_instances: int
    spot: bool
    usd_per_hour: float  # everything rented
    method: str
    micro_batch_size: int
    grad_accum: int
    global_batch_size: int  # sequences per optimizer step
    gradient_checkpointing: bool
    sharding: str  # single | ddp | fsdp | fsdp_offload
    device_used_bytes: int  # per GPU, what nvidia-smi would show
    gpu_memory_bytes: int
    usable_memory_bytes: int  # gpu_memory_bytes x (1 - headroom): the fit limit
    tokens_per_second: float  # trained tokens per second, all GPUs
    tokens_per_second_per_gpu: float
    scaling_efficiency: float  # compute time / step time (1.0 on one GPU without offload)
    usd_per_million_tokens: float  # usd_per_hour / trained tokens per hour x 1e6 (training only, unbilled)
    optimizer_steps: int | None  # None: no dataset size given
    startup_hours: float
    checkpoint_hours: float | None
    est_hours: float | None  # start-up + training + checkpoints (None: no dataset size given)
    est_cost_usd: float | None  # billed (None: no dataset size given)
    price_source: str
    price_date: str
    notes: list[str] = []


class Rejected(BaseModel):
    """A cheaper (or faster) option that was left out, and why."""

    model_config = ConfigDict(frozen=True)

    gpu: str
    num_gpus: int
    provider: str | None  # None when the reason holds for every provider (memory)
    instance_type: str | None
    reason: str
    needed_bytes: int | None = None  # smallest device memory per GPU over the configurations tried
    gpu_memory_bytes: int
    est_hours: float | None = None  # the closest configuration's figures, had it been allowed
    est_cost_usd: float | None = None


class Recommendation(BaseModel):
    """Ranked plans for one job (``plans``), with the best rejected alternatives (``rejected``)."""

    model_config = ConfigDict(frozen=True)

    model: str
    method: str
    dataset_tokens: int | None  # tokens per epoch (packed); None: ranked per million tokens, no hours or cost
    epochs: float
    seq_len: int
    global_batch_size: int
    objective: str
    spot: bool
    max_gpus: int
    deadline_hours: float | None
    budget_usd: float | None
    headroom: float
    candidates_evaluated: int
    plans: list[Plan]
    rejected: list[Rejected]
    coefficients: str
    assumptions: str
    notes: list[str] = []

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def _repr_html_(self) -> str:
        head = (f"<b>{self.model}</b> {self.method}: {len(self.plans)} plans ranked by {self.objective}")
        return head + self.to_dataframe().to_html(max_rows=20)

    def to_dataframe(self) -> Any:
        """One row per plan, with GiB and GB columns beside the bytes."""
        import pandas as pd

        df = pd.DataFrame([p.model_dump() for p in self.plans])
        if not df.empty:
            df["device_used_gib"] = df["device_used_bytes"] / GIB
            df["gpu_memory_gib"] = df["gpu_memory_bytes"] / GIB
        return df


# ----------------------------------------------------------------------------------------- inputs


def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else list(value)
    out = [s.strip() for item in items for s in str(item).split(",") if s.strip()]
    return out or None


def _dataset_tokens(dataset_tokens: int | None, examples: int | None, avg_tokens: float | None,
                    seq_len: int, problems: list[str]) -> int | None:
    if dataset_tokens is not None:
        if examples is not None or avg_tokens is not None:
            problems.append("give either dataset_tokens or examples with avg_tokens, not both")
        if dataset_tokens <= 0:
            problems.append(f"dataset_tokens={dataset_tokens}: must be > 0")
        return int(dataset_tokens)
    if examples is None and avg_tokens is None:
        return None  # no dataset size: plans are ranked per million trained tokens (or by tokens/s)
    if examples is None or avg_tokens is None:
        problems.append("the dataset size is missing: give --dataset-tokens (e.g. 100M), or --examples with --avg-tokens")
        return 0
    if examples <= 0 or avg_tokens <= 0:
        problems.append(f"examples={examples}, avg_tokens={avg_tokens}: both must be > 0")
        return 0
    # packed into seq_len windows; an example longer than seq_len is truncated to it
    return int(math.ceil(examples * min(float(avg_tokens), seq_len)))


def _price_rows(prices: str | Path | Sequence[PriceRow] | None) -> tuple[PriceRow, ...]:
    if prices is None:
        return load_prices()
    if isinstance(prices, (str, Path)):
        return load_prices(prices)
    return tuple(prices)


def _gpu_counts(max_gpus: int) -> list[int]:
    counts = {2**k for k in range(0, 31) if 2**k <= max_gpus}
    counts.add(max_gpus)
    return sorted(counts)


# ----------------------------------------------------------------------------------------- the grid


class _Offers:
    """Columns of the offers table: one row per (GPU type, GPU count, provider) with its instance choice."""

    def __init__(self, gpus: list[GPU], counts: list[int], spot: bool, providers: list[str] | None,
                 rows: tuple[PriceRow, ...], include_quotes: bool | None) -> None:
        recs = []
        for gi, g in enumerate(gpus):
            for n in counts:
                for ch in cheapest_instances(g.gpu, n, spot=spot, providers=providers, prices=rows,
                                             include_quotes=include_quotes):
                    recs.append((gi, n, ch))
        self.choices = [r[2] for r in recs]
        self.gpu_idx = np.array([r[0] for r in recs], dtype=int)
        self.n = np.array([r[1] for r in recs], dtype=float)
        self.instances = np.array([c.num_instances for c in self.choices], dtype=float)
        self.paid = np.array([c.gpus_paid for c in self.choices], dtype=float)
        self.usd_per_hour = np.array([c.usd_per_hour for c in self.choices], dtype=float)
        self.granularity = np.array([c.billing_granularity_s or 0 for c in self.choices], dtype=float)
        self.minimum = np.array([c.billing_minimum_s or 0 for c in self.choices], dtype=float)

    def __len__(self) -> int:
        return len(self.choices)


def _billed_cost(usd_per_hour: np.ndarray, runtime_s: np.ndarray, granularity_s: np.ndarray,
                 minimum_s: np.ndarray) -> np.ndarray:
    """Vectorized ftcalc.tables.pricing.billed_cost_usd (granularity 0 = continuous, minimum 0 = none); the
    per-instance rounding is the same for every instance, so the total price per hour can be used."""
    gran = np.where(granularity_s > 0, granularity_s, 1.0)
    billed = np.where(granularity_s > 0, np.ceil(runtime_s / gran - 1e-9) * gran, runtime_s)
    billed = np.maximum(billed, minimum_s)
    return usd_per_hour * billed / 3600.0


# ----------------------------------------------------------------------------------------- the search


def recommend(model: str, method: str = "lora", dataset_tokens: int | None = None, examples: int | None = None,
              avg_tokens: float | None = None, epochs: float = 1.0, seq_len: int = 2048,
              gpu: str | Sequence[str] | None = None, provider: str | Sequence[str] | None = None,
              max_gpus: int = 8, spot: bool = False, deadline_hours: float | None = None,
              budget_usd: float | None = None, objective: str = "cost", top: int = 5, headroom: float = 0.05,
              *, global_batch_size: int | None = None, global_batch_tokens: int | None = None,
              micro_batch_sizes: Sequence[int] = MICRO_BATCH_SIZES, optimizer: str = "adamw_torch",
              precision: str = "bf16-true", lora_r: int = DEFAULTS.lora_r,
              prices: str | Path | Sequence[PriceRow] | None = None,
              include_quotes: bool | None = None) -> Recommendation:
    """Rank the ways to fine-tune ``model`` on a dataset by cost or time, over real instance shapes.

    Args:
        model: catalog id or alias (``70b``), a config.json path, or a hub id.
        method: ``full``, ``lora``, ``qlora``, or ``auto`` (all three, ranked together by the objective).
        dataset_tokens: tokens per epoch; or ``examples`` x ``avg_tokens`` (packed, truncated at seq_len). Neither:
            plans are ranked by ``usd_per_million_tokens`` (objective cost) or tokens/s (objective time), and
            ``est_hours`` / ``est_cost_usd`` / ``optimizer_steps`` are None.
        epochs, seq_len: passes over the data; tokens per sequence.
        gpu: one GPU name or a list (any spelling ``get_gpu`` accepts); default every GPU with a price.
        provider: one provider or a list; default all.
        max_gpus: most GPUs one plan may train on (counts tried: powers of two and this).
        spot: use spot/interruptible prices (shapes without one are skipped).
        deadline_hours, budget_usd: constraints on est_hours and est_cost_usd.
        objective: ``cost`` (then time) or ``time`` (then cost).
        top: plans to return (the same number of rejected alternatives at most).
        headroom: share of GPU memory kept free: a plan fits when device memory <= memory x (1 - headroom).
        global_batch_size / global_batch_tokens: the target global batch (default 16 sequences).
        micro_batch_sizes: micro-batch sizes to try.
        optimizer, precision, lora_r: as in ``ftcalc estimate``.
        prices: a price file (ftcalc prices.csv format or a SkyPilot vms.csv) or rows; default data/prices.csv.
        include_quotes: passed to cheapest_instances (None: guide quotes only where a provider has no list price).
    Returns:
        A :class:`Recommendation`; ``plans`` is never empty.
    Raises:
        InvalidArgumentError (bad values, all listed at once), UnknownModelError, UnknownGPUError,
        UnknownProviderError, DataFileError (a bad --prices file), DoesNotFitError (nothing fits, or no
        plan meets the deadline / budget: the message says which constraint binds and what would do).
    Example:
        >>> rec = recommend("70b", method="qlora", dataset_tokens=10_000_000, gpu="h100")
        >>> rec.plans[0].num_gpus, rec.plans[0].method
        (1, 'qlora')
    """
    from ftcalc import validation as v

    problems: list[str] = []

    def check(fn: Any, value: Any, *args: Any) -> Any:
        try:
            return fn(value, *args)
        except InvalidArgumentError as e:
            problems.append(str(e))
            return None

    if method not in (*METHODS, "auto"):
        problems.append(f"{v.param('method')}={method!r}: expected one of {', '.join(METHODS)}, auto")
    if objective not in ("cost", "time"):
        problems.append(f"{v.param('objective')}={objective!r}: expected cost or time")
    if check(v.positive_int, max_gpus, "max_gpus") is not None and max_gpus > v.MAX_GPUS_PER_PLAN:
        problems.append(f"{v.param('max_gpus')}={max_gpus}: expected at most {v.MAX_GPUS_PER_PLAN}")
    check(v.epochs, epochs, "epochs")
    check(v.positive_int, top, "top")
    check(v.share, headroom, "headroom")
    if deadline_hours is not None:
        deadline_hours = check(v.hours, deadline_hours, "deadline_hours")
    if budget_usd is not None:
        budget_usd = check(v.usd, budget_usd, "budget_usd")
    if global_batch_size is not None:
        check(v.positive_int, global_batch_size, "global_batch_size")
    if global_batch_tokens is not None:
        check(v.tokens, global_batch_tokens, "global_batch_tokens")
    if global_batch_size is not None and global_batch_tokens is not None:
        problems.append("give global_batch_size (sequences) or global_batch_tokens, not both")
    if not micro_batch_sizes or any(not (isinstance(b, int) and b >= 1) for b in micro_batch_sizes):
        problems.append(f"micro_batch_sizes={tuple(micro_batch_sizes)}: expected integers >= 1")
    if check(v.positive_int, seq_len, "seq_len") is None:
        seq_len = 1
    if dataset_tokens is not None:
        dataset_tokens = check(v.tokens, dataset_tokens, "dataset_tokens") or 1
    if examples is not None:
        examples = check(v.positive_int, examples, "examples") or 1
    if avg_tokens is not None:
        avg_tokens = check(v.positive_float, avg_tokens, "avg_tokens") or 1.0
    tokens_per_epoch = _dataset_tokens(dataset_tokens, examples, avg_tokens, seq_len, problems)
    if tokens_per_epoch is not None and tokens_per_epoch > v.MAX_TOKENS:
        problems.append(f"{v.param('examples')} x {v.param('avg_tokens')} = {tokens_per_epoch:.3g} tokens: expected at "
                        f"most {v.MAX_TOKENS:.0e}")
    if tokens_per_epoch is None and (deadline_hours is not None or budget_usd is not None):
        problems.append("a deadline or budget needs the dataset size: give --dataset-tokens (e.g. 100M), "
                        "or --examples with --avg-tokens")
    if problems:
        raise InvalidArgumentError("; ".join(problems))
    if global_batch_tokens is not None:
        target = max(1, math.ceil(global_batch_tokens / seq_len))
    else:
        target = int(global_batch_size or DEFAULT_GLOBAL_BATCH)

    spec = resolve_model(model)
    ctx = spec.arch.max_position_embeddings
    if ctx and seq_len > ctx:
        raise InvalidArgumentError(f"{v.param('seq_len')} {seq_len} exceeds {spec.id}'s context of {ctx} tokens")
    base = make_options(method="lora" if method == "auto" else method, seq_len=seq_len, optimizer=optimizer,
                        precision=precision, lora_r=lora_r)
    methods = METHODS if method == "auto" else (method,)

    # prices, providers, GPUs
    rows = _price_rows(prices)
    known_providers = sorted({r.provider for r in rows})
    providers = _as_list(provider)
    if providers:
        providers = [p.lower() for p in providers]
        bad = [p for p in providers if p not in known_providers]
        if bad:
            raise UnknownProviderError(f"unknown provider {', '.join(repr(b) for b in bad)}; "
                                       f"the price table has {', '.join(known_providers)}")
    gpu_names = _as_list(gpu)
    if gpu_names:
        slugs = list(dict.fromkeys(get_gpu(g).gpu for g in gpu_names))
    else:
        slugs = sorted({r.gpu for r in rows})
    priced = {r.gpu for r in rows if r.usd_per_hour(spot) is not None
              and (providers is None or r.provider in providers)}
    unpriced = [s for s in slugs if s not in priced]
    slugs = [s for s in slugs if s in priced]
    if not slugs:
        where = f" at {', '.join(providers)}" if providers else ""
        kind = "spot" if spot else "on-demand"
        have = sorted(priced)
        raise InvalidArgumentError(
            f"no {kind} price for {', '.join(unpriced)}{where}; "
            + (f"priced GPUs there: {', '.join(have)}" if have else "drop --provider or --spot")
            + " (see `ftcalc prices`)")
    table = load_gpus()
    gpus = [table[s] for s in slugs]
    offers = _Offers(gpus, _gpu_counts(max_gpus), spot, providers, rows, include_quotes)

    if not len(offers):
        raise InvalidArgumentError(
            f"no instance in the price table rents {', '.join(slugs)} in counts up to {max_gpus}"
            + (" (guide quotes excluded: include_quotes=False)" if include_quotes is False else ""))
    pending: dict[int, tuple] | None = {} if SCREEN else None
    opts_list, states = config_grid(spec, base, methods, sorted(set(micro_batch_sizes)), target, sharded_qlora=True,
                                     pending=pending)
    if not opts_list:
        raise InvalidArgumentError(f"{v.param('precision')} 32-true with {v.param('method')} qlora: QLoRA computes in "
                                   "bf16; use bf16-true")
    times = micro_batch_times(spec, opts_list, gpus)
    a = sh.load_assumptions()
    sized = tokens_per_epoch is not None
    cand = _Candidates(spec, opts_list, states, times, gpus, offers, target, seq_len,
                       tokens_per_epoch * epochs if sized else 0.0, headroom, a, pending=pending)
    c = cand
    in_time = np.ones_like(c.fits) if deadline_hours is None else c.hours <= deadline_hours
    in_budget = np.ones_like(c.fits) if budget_usd is None else c.cost <= budget_usd
    if sized:
        primary, secondary = (c.cost, c.hours) if objective == "cost" else (c.hours, c.cost)
    else:  # no dataset size: the rates that do not depend on it (cost per token, seconds per token)
        s_per_token = c.step_s / (c.global_seqs * seq_len)
        primary, secondary = ((c.usd_per_mtok, s_per_token) if objective == "cost"
                              else (s_per_token, c.usd_per_mtok))
    c.settle(in_time & in_budget, primary)
    ok = c.fits & in_time & in_budget
    if not ok.any():
        _raise_no_plan(c, spec.id, method, in_time, in_budget, deadline_hours, budget_usd, max_gpus, headroom)

    # ---- the best configuration per offer, then the offers ranked
    # per offer, the simplest sharding (single < DDP < FSDP < offload) within SIMPLER_WITHIN of its best
    # objective, then the best objective, then the least memory; offers ranked by that choice
    best_value = np.full(len(offers), np.inf)
    np.minimum.at(best_value, c.ki[ok], primary[ok])
    idx = np.flatnonzero(ok & (primary <= best_value[c.ki] * (1 + SIMPLER_WITHIN)))
    idx = idx[np.lexsort((c.used[idx], secondary[idx], primary[idx], c.si[idx], c.ki[idx]))]
    _, first = np.unique(c.ki[idx], return_index=True)
    best = idx[first]
    best = best[np.lexsort((c.used[best], c.si[best], secondary[best], primary[best]))][:top]
    plans = [c.plan(rank, j, spot, sized) for rank, j in enumerate(best, start=1)]
    rejected = _rejected(c, in_time, in_budget, primary, deadline_hours, budget_usd, float(primary[best[0]]),
                         top, headroom)
    notes = []
    if unpriced:
        notes.append(f"no {'spot' if spot else 'on-demand'} price for {', '.join(unpriced)}: left out")
    if not sized:
        notes.append(DATASET_HINT)
    if method == "auto":
        notes.append("method auto ranks full/LoRA/QLoRA by the objective only, not by model quality")
    return Recommendation(
        model=spec.id, method=method, dataset_tokens=tokens_per_epoch, epochs=epochs, seq_len=seq_len,
        global_batch_size=target, objective=objective, spot=spot, max_gpus=max_gpus,
        deadline_hours=deadline_hours, budget_usd=budget_usd, headroom=headroom,
        candidates_evaluated=len(c.ci), plans=plans, rejected=rejected,
        coefficients=f"{load_coefficients().source} ({coefficients_label()})", assumptions=a.source, notes=notes)


def with_fsdp_gaps(spec: ModelSpec, opts_list: list[TrainingOptions], st: sh.ModelStates, ci: np.ndarray,
                    si: np.ndarray, n: np.ndarray, ga: np.ndarray) -> sh.ModelStates:
    """``st`` (one row per candidate) with the simulated FSDP gap of each full-shard candidate whose
    three-stream allocation sequence ftcalc simulates (full fine-tuning, LoRA and sharded QLoRA of untied
    decoders, one micro-batch per step: ftcalc.model.parallel.simulated_fsdp_gap_bytes, cached per configuration and
    GPU count, 0.1-0.5 s each);
    NaN elsewhere (gradient accumulation included), where sharding.device_used_per_gpu takes its analytic
    path, as estimate_parallel does."""
    from ftcalc.model.parallel import simulated_fsdp_gap_bytes

    gaps = np.full(len(ci), np.nan)
    for k in np.flatnonzero((si == sh.FSDP) & (np.asarray(ga) == 1)):
        g = simulated_fsdp_gap_bytes(spec, opts_list[ci[k]], int(n[k]))
        gaps[k] = np.nan if g is None else g
    return replace(st, gap_fsdp=gaps)


def _fsdp_gaps_screened(spec: ModelSpec, opts_list: list[TrainingOptions], ci: np.ndarray, si: np.ndarray,
                        n: np.ndarray, ga: np.ndarray, pending: dict[int, tuple[int, int]]) -> np.ndarray:
    """:func:`with_fsdp_gaps`' gap_fsdp without running a simulation: gaps already simulated in this process
    are filled in, the others are 0 and recorded in ``pending`` (candidate -> (configuration, GPU count))."""
    from ftcalc.model.parallel import cached_fsdp_gap_bytes, fsdp_gap_simulated

    gaps = np.full(len(ci), np.nan)
    for k in np.flatnonzero((si == sh.FSDP) & (np.asarray(ga) == 1)):
        opts, num = opts_list[ci[k]], int(n[k])
        if not fsdp_gap_simulated(spec, opts, num):
            continue
        g = cached_fsdp_gap_bytes(spec, opts, num)
        if g is None:
            gaps[k] = 0.0
            pending[int(k)] = (int(ci[k]), num)
        else:
            gaps[k] = g
    return gaps


class _Candidates:
    """Every (configuration, sharding, offer) that makes sense, evaluated at once: one array element each.

    Attributes are numpy arrays over candidates: ``ci``/``si``/``ki`` index the configuration, sharding
    and offer; ``used`` is device memory per GPU, ``fits`` the memory test (and, for CPU offload, host
    RAM; offload is dropped when anything else fits), ``hours`` and ``cost`` the estimates.
    """

    def __init__(self, spec: ModelSpec, opts_list: list[TrainingOptions], states: sh.ModelStates,
                 times: StepParts, gpus: list[GPU], offers: _Offers, target: int,
                 seq_len: int, total_tokens: float, headroom: float, a: sh.Assumptions,
                 pending: dict[int, tuple] | None = None) -> None:
        self.opts_list, self.states, self.gpus, self.offers, self.seq_len = opts_list, states, gpus, offers, seq_len
        self.spec, self.a = spec, a
        ci, si, ki = (x.ravel() for x in np.meshgrid(np.arange(len(opts_list)), np.arange(len(sh.SHARDINGS)),
                                                     np.arange(len(offers)), indexing="ij"))
        n = offers.n[ki]
        mb = np.array([o.batch_size for o in opts_list], dtype=float)[ci]
        # one GPU: no data parallelism (FSDP + offload still possible); several: DDP or FSDP
        valid = np.where(n == 1, (si == sh.SINGLE) | (si == sh.FSDP_OFFLOAD), si != sh.SINGLE)
        valid &= si != sh.FSDP_GRAD_OP  # measured (docs/multi-gpu.md), not offered: full-shard never holds more
        # QLoRA as peft prepares it (fp32 upcast) runs on one GPU or under DDP; sharded QLoRA (bf16,
        # recipe.build_model_sharded) under FSDP full-shard only (the recipe does not offload 4-bit weights)
        upcast = np.array([o.fp32_upcast for o in opts_list])[ci]
        sharded_q = np.array([o.sharded_qlora for o in opts_list])[ci]
        valid &= ~(upcast & ((si == sh.FSDP) | (si == sh.FSDP_OFFLOAD)))
        valid &= ~(sharded_q & (si != sh.FSDP))
        valid &= (mb * n <= target) | (mb == 1)  # the global batch stays at the target
        self.ci, self.si, self.ki, self.n, mb = ci[valid], si[valid], ki[valid], n[valid], mb[valid]
        ci, si, ki, n = self.ci, self.si, self.ki, self.n
        self.gi = gi = offers.gpu_idx[ki]
        self.ga = ga = np.maximum(1.0, np.ceil(target / (mb * n)))
        self.global_seqs = mb * n * ga
        self.mem_cap = np.array([g.memory_bytes for g in gpus], dtype=float)[gi]
        self.usable = self.mem_cap * (1.0 - headroom)
        self.host_have = 0.9 * a.host_memory_bytes_per_gpu * offers.paid[ki]
        self.offload = si == sh.FSDP_OFFLOAD
        # Screening (``pending`` given): the allocator simulations are the cold cost (0.1-1 s each), and a gap
        # only adds to device memory (reserved >= allocated, and device_used_per_gpu grows with every gap).
        # So memory is first evaluated with 0 for every gap not yet simulated (a lower bound); a candidate whose
        # lower bound is over its GPU does not fit whatever the gap, and only those that may fit are simulated
        # (_screen). Messages that quote a non-fitting candidate's bytes simulate what they quote
        # (exact_argmin). tests/solver/test_screening.py checks the result equals the exhaustive evaluation.
        screened = pending is not None  # else every gap is simulated here, as without screening
        pending = pending or {}
        self.pending_cfg_single: dict[int, tuple] = {c: v[:3] for c, v in pending.items() if v[3]}
        self.pending_cfg_ddp: dict[int, tuple] = {c: v[:3] for c, v in pending.items() if v[4]}
        self.pending_fsdp: dict[int, tuple[int, int]] = {}
        st = states.take(ci)
        if not screened:
            self._gap_fsdp = with_fsdp_gaps(spec, opts_list, st, ci, si, n, ga).gap_fsdp
        else:
            self._gap_fsdp = _fsdp_gaps_screened(spec, opts_list, ci, si, n, ga, self.pending_fsdp)
        self._evaluate()

        link_eff = np.array([sh.link_efficiency(g.interconnect, a) for g in gpus])[gi]
        bw = sh.comm_bandwidth_bytes_per_s(np.array([g.interconnect_gbps for g in gpus])[gi], link_eff,
                                           np.array([g.p2p for g in gpus])[gi], offers.instances[ki], a)
        st = self._st
        parts = times.take(ci, gi)
        self.host_ratio = parts.host_launch_ratio  # HOST_BOUND_NOTE / NEAR_HOST_BOUND_NOTE (throughput.host_note)
        self.step_s, self.compute_s = sh.step_seconds_parallel(
            parts, si, n, ga, st.gathered_weights, st.grads, st.trainable_params,
            offers.instances[ki], bw, a, units=st.units, untie=st.untie_trainable(si),
            memory_bandwidth_bytes_per_s=np.array([g.memory_bandwidth_gbps * 1e9 for g in gpus])[gi])
        self.steps = np.ceil(total_tokens / (self.global_seqs * seq_len))
        train_s = self.steps * self.step_s
        resume_bytes = np.where(st.full, st.weights, st.adapters) + st.opt_states + st.opt_paged
        self.ckpt_s = sh.checkpoint_seconds(train_s, resume_bytes, offers.instances[ki], a)
        self.start_s = sh.startup_seconds(2.0 * inventory(spec.arch).total_params, a)  # bf16 checkpoint files
        runtime_s = self.start_s + train_s + self.ckpt_s
        self.hours = runtime_s / 3600.0
        self.cost = _billed_cost(offers.usd_per_hour[ki], runtime_s, offers.granularity[ki], offers.minimum[ki])
        # training alone, per million trained tokens: what ranks plans when no dataset size is given
        self.usd_per_mtok = offers.usd_per_hour[ki] * self.step_s / 3600.0 / (self.global_seqs * seq_len) * 1e6

    def _evaluate(self) -> None:
        """Memory per GPU and the fit of every candidate from the gaps known now (pending ones at 0)."""
        ci, si, n, ga = self.ci, self.si, self.n, self.ga
        self._st = st = replace(self.states.take(ci), gap_fsdp=self._gap_fsdp)
        self.used = sh.device_used_per_gpu(st, si, n, ga, self.a.nccl_buffer_bytes)
        self.device_ok = device_ok = self.used <= self.usable
        # CPU offload holds the model states in host RAM: 90 % of an assumed RAM per rented GPU
        self.host_need = sh.host_bytes_offload(st)
        host_ok = self.host_need <= self.host_have
        offload = self.offload
        self.offload_fits = device_ok & offload & host_ok
        fits = device_ok & (~offload | host_ok)
        if (fits & ~offload).any():  # CPU offload is the last resort
            fits &= ~offload
            self.considered = ~offload
        else:
            self.considered = np.ones_like(fits)
        self.fits = fits
        # which candidates' memory still rests on a gap not simulated: one GPU and FSDP without its own
        # simulated gap read gap_single, DDP reads gap_ddp, FSDP with a simulated sequence its gap_fsdp
        fsdp_sim = np.zeros(len(ci), dtype=bool)
        fsdp_sim[list(self.pending_fsdp)] = True
        fsdp_sim |= ~np.isnan(self._gap_fsdp)
        uses_single = (si == sh.SINGLE) | (((si == sh.FSDP) | (si == sh.FSDP_GRAD_OP)) & ~fsdp_sim)
        pend = np.zeros(len(ci), dtype=bool)
        if self.pending_cfg_single:
            pend |= uses_single & np.isin(ci, list(self.pending_cfg_single))
        if self.pending_cfg_ddp:
            pend |= (si == sh.DDP) & np.isin(ci, list(self.pending_cfg_ddp))
        pend[list(self.pending_fsdp)] = True
        self.pending = pend

    def settle(self, allowed: np.ndarray, primary: np.ndarray) -> None:
        """Simulate the gaps until the plans are what the exhaustive evaluation gives.

        A pending candidate matters only if it may fit (its lower bound is within the GPU) and may be its offer's
        choice: recommend picks, per offer, among the allowed fitting candidates within SIMPLER_WITHIN of the
        offer's best objective, so one whose objective is over that bound for a candidate already known to fit
        there cannot be picked nor move the bound. Offers with no known fit simulate every candidate that may
        fit (their rejection reasons need exact verdicts), and so does everything while no candidate without
        CPU offload is known to fit (the last-resort rule of offload depends on it)."""
        while True:
            if not (self.fits & ~self.offload & ~self.pending).any():
                todo = self.pending & self.device_ok
            else:
                known = self.fits & ~self.pending & allowed
                bound = np.full(len(self.offers), np.inf)
                np.minimum.at(bound, self.ki[known], primary[known])
                todo = self.pending & self.device_ok & (primary <= bound[self.ki] * (1 + SIMPLER_WITHIN))
            if not todo.any():
                return
            # per offer, the most promising first: once it is known to fit, it bounds the others
            idx = np.flatnonzero(todo)
            idx = idx[np.lexsort((primary[idx], self.ki[idx]))]
            _, first = np.unique(self.ki[idx], return_index=True)
            self.resolve(idx[first])

    def resolve(self, idx: Sequence[int] | np.ndarray, single_cfgs: Sequence[int] = ()) -> None:
        """Simulate the gaps candidates ``idx`` rest on (each configuration and GPU count once), and the
        one-GPU gaps of configurations ``single_cfgs``; re-evaluate."""
        from ftcalc.model.parallel import simulated_fsdp_gap_bytes

        single, ddp = self.states.gap_single.copy(), self.states.gap_ddp.copy()
        for c in single_cfgs:
            if c in self.pending_cfg_single:
                arch, opts1, peak = self.pending_cfg_single.pop(c)
                single[c] = (peak + simulated_gap(arch, opts1, False)) - peak
        for j in idx:
            c, si = int(self.ci[j]), int(self.si[j])
            if j in self.pending_fsdp:
                key = self.pending_fsdp[j]
                g = simulated_fsdp_gap_bytes(self.spec, self.opts_list[c], key[1])
                for k in [k for k, v in self.pending_fsdp.items() if v == key]:
                    self._gap_fsdp[k] = g
                    del self.pending_fsdp[k]
            elif si == sh.DDP and c in self.pending_cfg_ddp:
                arch, opts1, _ = self.pending_cfg_ddp.pop(c)
                ddp[c] = simulated_gap(arch, opts1, True)
            elif c in self.pending_cfg_single:
                arch, opts1, peak = self.pending_cfg_single.pop(c)
                single[c] = (peak + simulated_gap(arch, opts1, False)) - peak  # as estimate_memory's reserved - peak
        self.states = replace(self.states, gap_single=single, gap_ddp=ddp)
        self._evaluate()

    def exact_argmin(self, mask: np.ndarray, divisor: np.ndarray | None = None) -> int:
        """The candidate of ``mask`` with the least device memory (or memory / ``divisor``), first on ties,
        as an exhaustive evaluation finds it: pending candidates sit at their lower bound, so while one is the
        least it is simulated, until the least is exact."""
        idx = np.flatnonzero(mask)
        while True:
            vals = self.used[idx] if divisor is None else (self.used / divisor)[idx]
            j = int(idx[np.argmin(vals)])
            if not self.pending[j]:
                return j
            self.resolve([j])

    def where(self, j: int) -> str:
        ch = self.offers.choices[self.ki[j]]
        return f"{_label(self.gpus[self.gi[j]].gpu, self.n[j])} at {ch.provider} {ch.instance_type}"

    def plan(self, rank: int, j: int, spot: bool, sized: bool = True) -> Plan:
        ch = self.offers.choices[self.ki[j]]
        opts = self.opts_list[self.ci[j]]
        n, si = int(self.n[j]), int(self.si[j])
        notes = []
        if ch.basis == "quote":
            notes.append("price is a guide's quote, not a checked list price")
        if ch.gpus_paid > n:
            notes.append(f"pays for {ch.gpus_paid} GPUs, trains on {n}")
        if si != sh.SINGLE:
            notes.append(MULTI_GPU_NOTE)
        if si == sh.FSDP_OFFLOAD:
            notes.append(f"CPU offload: needs about {self.host_need[j] / GB:.0f} GB of host RAM")
        note = host_note(float(self.host_ratio[j]))
        if note:
            notes.append(note)
        tokens_step = self.global_seqs[j] * self.seq_len
        return Plan(
            rank=rank, provider=ch.provider, instance_type=ch.instance_type, region=ch.region, basis=ch.basis,
            gpu=ch.gpu, num_gpus=n, gpus_paid=ch.gpus_paid, num_instances=ch.num_instances, spot=spot,
            usd_per_hour=round(ch.usd_per_hour, 4), method=opts.method, micro_batch_size=opts.batch_size,
            grad_accum=int(self.ga[j]), global_batch_size=int(self.global_seqs[j]),
            gradient_checkpointing=bool(opts.checkpointing), sharding=sh.SHARDINGS[si],
            device_used_bytes=int(self.used[j]), gpu_memory_bytes=int(self.mem_cap[j]),
            usable_memory_bytes=int(self.usable[j]),
            tokens_per_second=float(tokens_step / self.step_s[j]),
            tokens_per_second_per_gpu=float(tokens_step / self.step_s[j] / n),
            scaling_efficiency=float(self.compute_s[j] / self.step_s[j]),
            usd_per_million_tokens=round(float(self.usd_per_mtok[j]), 4),
            optimizer_steps=int(self.steps[j]) if sized else None,
            startup_hours=float(self.start_s / 3600.0),
            checkpoint_hours=float(self.ckpt_s[j] / 3600.0) if sized else None,
            est_hours=float(self.hours[j]) if sized else None,
            est_cost_usd=round(float(self.cost[j]), 2) if sized else None,
            price_source=ch.source, price_date=ch.date, notes=notes)


def _label(gpu: str, n: float) -> str:
    return f"{gpu} x{int(n)}"


def _memory_reason(c: _Candidates, mine: np.ndarray, headroom: float) -> tuple[str, float]:
    """Why none of the candidates ``mine`` (one GPU type and count) fits, and the device memory it needs."""
    j = int(np.flatnonzero(mine)[0])
    g, n = c.gpus[c.gi[j]], c.n[j]
    plain = mine & ~c.offload
    least = c.exact_argmin(plain if plain.any() else mine)  # may simulate, replacing c.used: read it after
    need = float(c.used[least])
    tail = f" ({c.usable[j] / GB:.1f} GB usable with {headroom:.0%} headroom)" if headroom else ""
    text = f"{_label(g.gpu, n)}: needs {need / GB:.1f} GB per GPU, has {g.memory_bytes / GB:.1f} GB{tail}"
    if (c.offload_fits & mine).any():
        text += "; fits only with CPU offload"
    elif (c.offload & c.device_ok & mine).any():
        k = np.flatnonzero(c.offload & c.device_ok & mine)
        k = k[np.argmin(c.host_need[k])]
        text += (f"; CPU offload would need {c.host_need[k] / GB:,.0f} GB of host RAM, over the "
                 f"{c.host_have[k] / GB:,.0f} GB assumed for {int(c.offers.paid[c.ki[k]])} rented GPU(s)")
    return text, need


def _rejected(c: _Candidates, in_time, in_budget, primary, deadline_hours, budget_usd, best_value, top,
              headroom) -> list[Rejected]:
    """Offers without a plan whose best objective, ignoring the constraints, beats the winner's.

    Memory reasons hold at every provider: one line per GPU type, for the most GPUs tried.
    """
    has_plan = np.zeros(len(c.offers), dtype=bool)
    has_plan[c.ki[c.fits & in_time & in_budget]] = True
    order = np.argsort(primary, kind="stable")
    _, first = np.unique(c.ki[order], return_index=True)
    out: list[tuple[float, Rejected]] = []
    seen: set[tuple[int, float]] = set()
    for j in order[first]:  # per offer, its best candidate ignoring every constraint
        k = c.ki[j]
        if has_plan[k] or primary[j] >= best_value:
            continue
        g = c.gpus[c.gi[j]]
        ch = c.offers.choices[k]
        mine = c.ki == k
        fit_here = c.fits & mine
        if not fit_here.any():
            if (c.gi[j], c.n[j]) in seen:
                continue
            seen.add((c.gi[j], c.n[j]))
            reason, need = _memory_reason(c, (c.gi == c.gi[j]) & (c.n == c.n[j]), headroom)
            out.append((float(primary[j]), Rejected(
                gpu=g.gpu, num_gpus=int(c.n[j]), provider=None, instance_type=None, reason=reason,
                needed_bytes=int(need), gpu_memory_bytes=int(c.mem_cap[j]))))
            continue
        if deadline_hours is not None and not (fit_here & in_time).any():
            h = float(c.hours[fit_here].min())
            reason = f"{c.where(j)}: {h:.1f} h at best, over the {deadline_hours:g} h deadline"
        else:
            cheapest = float(c.cost[fit_here & in_time].min())
            reason = f"{c.where(j)}: ${cheapest:,.2f} at best, over the ${budget_usd:,.2f} budget"
        pick = np.flatnonzero(fit_here)[np.argmin(primary[fit_here])]
        out.append((float(primary[j]), Rejected(
            gpu=g.gpu, num_gpus=int(c.n[j]), provider=ch.provider, instance_type=ch.instance_type, reason=reason,
            needed_bytes=int(c.used[pick]), gpu_memory_bytes=int(c.mem_cap[j]), est_hours=float(c.hours[pick]),
            est_cost_usd=round(float(c.cost[pick]), 2))))
    most: dict[str, int] = {}
    for _, r in out:
        if r.provider is None:
            most[r.gpu] = max(most.get(r.gpu, 0), r.num_gpus)
    out = [t for t in out if t[1].provider is not None or t[1].num_gpus == most[t[1].gpu]]
    out.sort(key=lambda t: t[0])
    return [r for _, r in out[:top]]


def _fmt_hours(h: float) -> str:
    return f"{h:.1f} h" if h < 48 else f"{h:.0f} h ({h / 24:.1f} days)"


def _raise_no_plan(c: _Candidates, model_id: str, method: str, in_time, in_budget, deadline_hours, budget_usd,
                   max_gpus: int, headroom: float) -> None:
    """Raise the DoesNotFitError that names the binding constraint and what would satisfy it."""
    fits = c.fits
    if not fits.any():
        # the GPU type and count that comes closest without offload
        plain = ~c.offload
        j = c.exact_argmin(plain, c.usable) if plain.any() else 0
        mine = (c.gi == c.gi[j]) & (c.n == c.n[j])
        reason, _ = _memory_reason(c, mine, headroom)
        how = ("even sharded (FSDP; the recipe does not offload 4-bit weights)" if method == "qlora"
               else "even sharded (FSDP, CPU offload)")
        msg = f"{model_id} ({method}) fits no allowed GPU with up to {max_gpus} GPU(s), {how}; the closest: {reason}"
        more = _gpus_to_fit(c, headroom)
        hints = []
        if more is not None and more[1] > max_gpus:
            hints.append(f"about {more[1]}x {more[0]} would fit (--max-gpus {more[1]})")
        if method in ("full", "lora"):
            hints.append("--method qlora" if method == "lora" else "--method lora or qlora")
        if more is None:
            hints.append("a shorter --seq-len")
        raise DoesNotFitError(msg + ("; options: " + "; ".join(hints) if hints else ""))
    if deadline_hours is not None and not (fits & in_time).any():
        j = int(np.flatnonzero(fits)[np.argmin(c.hours[fits])])
        raise DoesNotFitError(
            f"no plan finishes within the {deadline_hours:g} h deadline: the fastest that fits, {c.where(j)}, "
            f"takes {_fmt_hours(c.hours[j])}; allow --deadline {math.ceil(c.hours[j])}h, raise --max-gpus "
            f"(now {max_gpus}), or train on fewer tokens")
    if budget_usd is not None and deadline_hours is not None and (fits & in_budget).any():
        both = fits & in_time
        j = int(np.flatnonzero(both)[np.argmin(c.cost[both])])
        k = int(np.flatnonzero(fits & in_budget)[np.argmin(c.hours[fits & in_budget])])
        raise DoesNotFitError(
            f"no plan meets both the {deadline_hours:g} h deadline and the ${budget_usd:,.2f} budget: the cheapest "
            f"within the deadline, {c.where(j)}, costs ${c.cost[j]:,.2f} (--budget {math.ceil(c.cost[j])}); the "
            f"fastest within the budget, {c.where(k)}, takes {_fmt_hours(c.hours[k])} "
            f"(--deadline {math.ceil(c.hours[k])}h)")
    pool = fits & in_time
    j = int(np.flatnonzero(pool)[np.argmin(c.cost[pool])])
    raise DoesNotFitError(
        f"no plan costs ${budget_usd:,.2f} or less: the cheapest that fits"
        f"{' the deadline' if deadline_hours is not None else ''}, {c.where(j)}, costs ${c.cost[j]:,.2f}; "
        f"allow --budget {math.ceil(c.cost[j])}, use --spot prices, or train on fewer tokens")


def _gpus_to_fit(c: _Candidates, headroom: float) -> tuple[str, int] | None:
    """The fewest GPUs (a power of two up to 4096) of the largest allowed GPU that would hold the smallest
    configuration with FSDP, or FSDP + offload (host RAM included); None when even 4096 would not."""
    a = sh.load_assumptions()
    g = max(c.gpus, key=lambda x: x.memory_bytes)
    shardable = [i for i in np.unique(c.ci) if not c.opts_list[i].fp32_upcast]  # QLoRA: the sharded variant
    if not shardable:
        return None
    cfg, counts = np.meshgrid(np.array(shardable), np.array([2.0**k for k in range(1, 13)]), indexing="ij")
    cfg, counts = cfg.ravel(), counts.ravel()
    st = c.states.take(cfg)
    qlora = np.array([c.opts_list[i].method == "qlora" for i in cfg])  # not offloaded by the recipe
    for shard in (sh.FSDP, sh.FSDP_OFFLOAD):
        while True:
            used = sh.device_used_per_gpu(st, shard, counts, 1, a.nccl_buffer_bytes)
            ok = used <= g.memory_bytes * (1 - headroom)
            if shard == sh.FSDP_OFFLOAD:
                ok &= (sh.host_bytes_offload(st) <= 0.9 * a.host_memory_bytes_per_gpu * counts) & ~qlora
            if not ok.any():
                break
            least = ok & (counts == counts[ok].min())
            # FSDP without a simulated sequence reads gap_single: at 0 where not simulated yet (a lower bound),
            # so the fewest GPUs is exact once one configuration that fits there has its gap
            open_cfg = [int(i) for i in cfg[least] if int(i) in c.pending_cfg_single]
            if shard == sh.FSDP_OFFLOAD or len(open_cfg) < least.sum():
                return g.gpu, int(counts[least][0])
            c.resolve([], single_cfgs=open_cfg)
            st = c.states.take(cfg)
    return None
