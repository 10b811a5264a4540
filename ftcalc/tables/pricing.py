"""The price table: providers, real instance shapes, on-demand and spot prices, billing granularity.

    ftcalc prices --gpu h100 --max-usd-per-gpu-hour 3      # prices_dataframe
    ftcalc recommend ... --prices my_prices.csv             # load_prices on a user file

Prices are per INSTANCE per hour, as providers and SkyPilot catalogs list them: an AWS p5.48xlarge is
one row with 8 GPUs at $55.04/h, never eight rows at $6.88. ``cheapest_instances`` turns "N GPUs of
this kind" into what is actually rented: one instance with at least N GPUs, or, beyond the largest
shape, k full nodes, and says how many GPUs are paid for. Column meanings and sources are in
docs/notes/data-tables.md.

Two file formats are read (chosen by the header):
  * ftcalc's own (data/prices.csv): provider, instance_type, gpu, gpus_per_instance, ...
  * a SkyPilot catalog vms.csv (skypilot-org/skypilot-catalog, schema v7/v8): InstanceType,
    AcceleratorName, AcceleratorCount, Price, SpotPrice, Region, ... in any column order.
"""

from __future__ import annotations

import ast
import csv
import io
import math
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import date as _date
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ftcalc._paths import data_dir
from ftcalc.errors import DataFileError, InvalidArgumentError, UnknownGPUError
from ftcalc.tables.hardware import GPU, get_gpu

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "PriceRow",
    "InstanceChoice",
    "load_prices",
    "prices_dataframe",
    "cheapest_instances",
    "billed_cost_usd",
    "skypilot_gpu_slug",
]

# basis: "list" = the provider's list price, captured by a dated catalog, API dump or transcription;
#        "quote" = a price quoted in a guide or article and not checked against the provider's list.
BASES = ("list", "quote")
REQUIRED_COLUMNS = (
    "provider",
    "instance_type",
    "gpu",
    "gpus_per_instance",
    "on_demand_usd_per_hour",
    "spot_usd_per_hour",
    "billing_granularity_s",
    "billing_minimum_s",
    "region",
    "source",
    "date",
    "notes",
)
SKYPILOT_REQUIRED_COLUMNS = (
    "InstanceType",
    "AcceleratorName",
    "AcceleratorCount",
    "Price",
    "SpotPrice",
    "Region",
)
_DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")  # 2026, 2026-03 or 2026-03-15: as precise as the source

# SkyPilot AcceleratorName spellings whose meaning differs from our alias for the same word. In
# SkyPilot catalogs a bare "A100" is the 40 GB part (AWS p4d, GCP a2, Lambda gpu_1x_a100), while
# ftcalc's alias 'a100' means the common 80 GB SXM card; GpuInfo's memory decides when present.
_SKYPILOT_NAMES = {
    "a100": "a100-40gb-sxm",
    "a100-80gb": "a100-80gb-sxm",
    "a100-80gb-sxm": "a100-80gb-sxm",
    "a100-80gb-pcie": "a100-80gb-pcie",
    "h100": "h100-sxm",
    "h100-sxm": "h100-sxm",
    "h100-pcie": "h100-pcie",
    "h100-nvl": "h100-nvl",
    "h200": "h200",
    "b200": "b200",
    "l40s": "l40s",
    "l4": "l4",
    "a10g": "a10g",
    "a10": "a10",
    "rtx4090": "rtx-4090",
    "rtx-4090": "rtx-4090",
    "rtx6000-ada": "rtx-6000-ada",
    "rtx-6000-ada": "rtx-6000-ada",
    "mi300x": "mi300x",
}


@dataclass(frozen=True)
class PriceRow:
    """One rentable shape at one provider: prices are per instance per hour."""

    provider: str
    instance_type: str
    gpu: str  # slug from gpus.csv
    gpus_per_instance: int
    on_demand_usd_per_hour: float | None  # None: not rentable on demand (e.g. spot/flex-only shapes)
    spot_usd_per_hour: float | None  # None: no spot offer known
    billing_granularity_s: int | None  # 1 per-second, 60 per-minute, 3600 hourly; None: not stated
    billing_minimum_s: int | None  # None: no minimum stated
    region: str
    source: str
    date: str
    notes: str = ""
    basis: str = "list"

    def usd_per_hour(self, spot: bool = False) -> float | None:
        return self.spot_usd_per_hour if spot else self.on_demand_usd_per_hour

    def usd_per_gpu_hour(self, spot: bool = False) -> float | None:
        price = self.usd_per_hour(spot)
        return None if price is None else price / self.gpus_per_instance


def billed_cost_usd(
    usd_per_hour: float, runtime_s: float, billing_granularity_s: int | None, billing_minimum_s: int | None
) -> float:
    """What one instance costs for ``runtime_s`` seconds: rounded up to the billing granularity and
    raised to the minimum charge. Unknown granularity is treated as continuous (SkyPilot does the same:
    sky/optimizer.py prices hourly_price * seconds / 3600)."""
    if runtime_s < 0:
        raise InvalidArgumentError(f"runtime_s must be >= 0, got {runtime_s}")
    billed_s = float(runtime_s)
    if billing_granularity_s:
        billed_s = math.ceil(billed_s / billing_granularity_s - 1e-9) * billing_granularity_s
    if billing_minimum_s:
        billed_s = max(billed_s, billing_minimum_s)
    return usd_per_hour * billed_s / 3600.0


@dataclass(frozen=True)
class InstanceChoice:
    """How one provider supplies N GPUs: ``num_instances`` x ``instance_type``."""

    provider: str
    instance_type: str
    gpu: str
    gpus_per_instance: int
    num_instances: int
    gpus_requested: int
    gpus_paid: int  # num_instances * gpus_per_instance, >= gpus_requested
    usd_per_hour: float  # for everything rented
    spot: bool
    billing_granularity_s: int | None
    billing_minimum_s: int | None
    region: str
    basis: str
    source: str
    date: str
    notes: str

    @property
    def multi_node(self) -> bool:
        return self.num_instances > 1

    @property
    def usd_per_paid_gpu_hour(self) -> float:
        return self.usd_per_hour / self.gpus_paid

    def cost_usd(self, runtime_s: float) -> float:
        """Total charge for running all instances ``runtime_s`` seconds, with billing rounding."""
        per_instance = self.usd_per_hour / self.num_instances
        return self.num_instances * billed_cost_usd(
            per_instance, runtime_s, self.billing_granularity_s, self.billing_minimum_s
        )


# ----------------------------------------------------------------------------------------- loading


def load_prices(path: str | Path | None = None, *, provider: str | None = None) -> tuple[PriceRow, ...]:
    """Read a price file: ftcalc's prices.csv format or a SkyPilot catalog vms.csv.

    Args:
        path: the file; default ``data_dir()/"prices.csv"``.
        provider: for a SkyPilot vms.csv, the provider name; default its folder name
            (``catalogs/v8/aws/vms.csv`` -> ``aws``).
    Returns:
        The rows, GPU names resolved to gpus.csv slugs.
    Raises:
        DataFileError: naming the file, line, column and what would be valid; every problem found is listed.
    """
    path = Path(path) if path is not None else data_dir() / "prices.csv"
    try:
        stamp = path.stat().st_mtime_ns
    except OSError as e:
        raise DataFileError(f"{path}: cannot read the price file ({e.strerror})") from None
    return _load_prices(str(path), stamp, provider)


@lru_cache(maxsize=16)
def _load_prices(path: str, _mtime_ns: int, provider: str | None) -> tuple[PriceRow, ...]:
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DataFileError(f"{path}: cannot read the price file ({e})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    if "AcceleratorName" in header or "InstanceType" in header:
        rows = _read_skypilot(path, reader, provider)
    else:
        rows = _read_ftcalc(path, reader)
    if not rows:
        raise DataFileError(f"{path}: no price rows (a header alone, or no row with a GPU); a price file needs "
                            "one row per instance type")
    return rows


def _read_ftcalc(path: str, reader: csv.DictReader) -> tuple[PriceRow, ...]:
    header = reader.fieldnames or []
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataFileError(
            f"{path}: missing column(s) {', '.join(missing)}; a price file needs {', '.join(REQUIRED_COLUMNS)}"
            " (optional: basis), or a SkyPilot vms.csv header (InstanceType, AcceleratorName, ...)"
        )
    rows: list[PriceRow] = []
    problems: list[str] = []
    for raw in reader:
        row, row_problems = _parse_price_row(f"{path}, line {reader.line_num}", raw)
        problems.extend(row_problems)
        if row is not None:
            rows.append(row)
    _raise_problems(path, problems)
    return tuple(rows)


def _parse_price_row(where: str, raw: dict[str, str]) -> tuple[PriceRow | None, list[str]]:
    """One data row of an ftcalc price file: the row, or None and every problem found in it."""
    problems: list[str] = []

    def text(column: str, required: bool = True) -> str:
        value = (raw.get(column) or "").strip()
        if required and not value:
            problems.append(f"{where}, column '{column}': empty; every row needs a {column}")
        return value

    def number(column: str, *, optional: bool, integer: bool = False, minimum: float = 0.0) -> float | None:
        value = (raw.get(column) or "").strip()
        if not value:
            if not optional:
                problems.append(f"{where}, column '{column}': empty; expected a number")
            return None
        try:
            parsed = float(value)
        except ValueError:
            what = "an integer" if integer else "a number such as 2.69"
            problems.append(f"{where}, column '{column}': '{value}' is not a number; expected {what}")
            return None
        if not math.isfinite(parsed) or parsed < minimum or (integer and parsed != int(parsed)):
            what = f"an integer >= {minimum:g}" if integer else f"a number >= {minimum:g}"
            problems.append(f"{where}, column '{column}': '{value}' is out of range; expected {what}")
            return None
        return parsed

    provider = text("provider").lower()
    instance_type = text("instance_type")
    gpu_name = text("gpu")
    gpu = None
    if gpu_name:
        try:
            gpu = get_gpu(gpu_name)
        except UnknownGPUError as e:
            problems.append(f"{where}, column 'gpu': {e}")
    count = number("gpus_per_instance", optional=False, integer=True, minimum=1)
    on_demand = number("on_demand_usd_per_hour", optional=True)
    spot = number("spot_usd_per_hour", optional=True)
    if on_demand is None and spot is None and not any("usd_per_hour" in p for p in problems):
        problems.append(
            f"{where}, columns 'on_demand_usd_per_hour'/'spot_usd_per_hour': both empty; give at least one price"
        )
    granularity = number("billing_granularity_s", optional=True, integer=True, minimum=1)
    minimum = number("billing_minimum_s", optional=True, integer=True)
    source = text("source")
    date = text("date")
    if date and not _DATE.match(date):
        problems.append(
            f"{where}, column 'date': '{date}' is not a date; expected YYYY-MM-DD, YYYY-MM or YYYY"
        )
    basis = (raw.get("basis") or "list").strip().lower()
    if basis not in BASES:
        problems.append(f"{where}, column 'basis': '{basis}' is not one of {'|'.join(BASES)}")
    if problems or gpu is None or count is None:
        return None, problems
    row = PriceRow(
        provider=provider,
        instance_type=instance_type,
        gpu=gpu.gpu,
        gpus_per_instance=int(count),
        on_demand_usd_per_hour=on_demand,
        spot_usd_per_hour=spot,
        billing_granularity_s=None if granularity is None else int(granularity),
        billing_minimum_s=None if minimum is None else int(minimum),
        region=(raw.get("region") or "").strip(),
        source=source,
        date=date,
        notes=(raw.get("notes") or "").strip(),
        basis=basis,
    )
    return row, problems


def _raise_problems(path: str, problems: list[str]) -> None:
    if not problems:
        return
    shown = problems[:10]
    more = f"\n... and {len(problems) - 10} more" if len(problems) > 10 else ""
    raise DataFileError(f"{len(problems)} problem(s) in {path}:\n" + "\n".join(shown) + more)


def skypilot_gpu_slug(accelerator_name: str, memory_mib: float | None = None) -> str:
    """Our slug for a SkyPilot AcceleratorName ('H100', 'A100-80GB', 'RTX4090' ...).

    The override table _SKYPILOT_NAMES comes first, then gpus.csv aliases. For the A100 family the
    GpuInfo memory, when known, picks 40 vs 80 GB. Raises UnknownGPUError for names we do not model.
    """
    key = re.sub(r"[\s_]+", "-", accelerator_name.strip().lower())
    slug = _SKYPILOT_NAMES.get(key) or get_gpu(key).gpu
    if memory_mib and slug.startswith("a100-"):
        size = "80gb" if memory_mib > 60_000 else "40gb"
        slug = re.sub(r"a100-\d+gb", f"a100-{size}", slug)
    return slug


def _skypilot_memory_mib(gpu_info: str | None) -> float | None:
    """SizeInMiB from a GpuInfo Python-literal dict (sky/catalog reads it with ast.literal_eval)."""
    if not gpu_info or "{" not in gpu_info:
        return None
    try:
        info = ast.literal_eval(gpu_info)
        return float(info["Gpus"][0]["MemoryInfo"]["SizeInMiB"])
    except (ValueError, SyntaxError, KeyError, IndexError, TypeError):
        return None


def _read_skypilot(path: str, reader: csv.DictReader, provider: str | None) -> tuple[PriceRow, ...]:
    header = reader.fieldnames or []
    missing = [c for c in SKYPILOT_REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataFileError(
            f"{path}: looks like a SkyPilot vms.csv but lacks column(s) {', '.join(missing)}; "
            f"needs {', '.join(SKYPILOT_REQUIRED_COLUMNS)} in any order"
        )
    provider = (provider or Path(path).parent.name or "skypilot").lower()
    # Billing rules are not in SkyPilot catalogs: take them from the shipped table when it knows the provider.
    billing = _shipped_billing().get(provider, (None, None))
    stamp = _date.fromtimestamp(Path(path).stat().st_mtime).isoformat()
    rows: list[PriceRow] = []
    problems: list[str] = []
    skipped: dict[str, int] = {}
    for raw in reader:
        line = reader.line_num
        where = f"{path}, line {line}"
        name = (raw.get("AcceleratorName") or "").strip()
        if not name:
            continue  # CPU-only instance
        instance_type = (raw.get("InstanceType") or "").strip()
        if not instance_type:
            # GCP lists GPUs as separate rows priced apart from the host VM (SkyPilot catalog
            # catalogs/v8/gcp/vms.csv: a GPU row has an empty InstanceType); pairing them
            # with a VM row is not implemented, so these rows are left out.
            reason = "GPU-only rows without InstanceType (GCP split pricing)"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        try:
            count = float(raw.get("AcceleratorCount") or "")
        except ValueError:
            problems.append(
                f"{where}, column 'AcceleratorCount': '{raw.get('AcceleratorCount')}' is not a number"
            )
            continue
        if count < 1 or count != int(count):
            reason = f"fractional GPU count {count:g}"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        try:
            slug = skypilot_gpu_slug(name, _skypilot_memory_mib(raw.get("GpuInfo") or raw.get("GPUInfo")))
        except UnknownGPUError:
            skipped[name] = skipped.get(name, 0) + 1
            continue
        prices = []
        for column in ("Price", "SpotPrice"):
            value = (raw.get(column) or "").strip()
            try:
                prices.append(float(value) if value else None)
            except ValueError:
                problems.append(
                    f"{where}, column '{column}': '{value}' is not a number; expected USD per instance-hour"
                )
                prices.append(None)
        if prices == [None, None]:
            continue  # listed but not priced (e.g. capacity-block-only shapes)
        region = (raw.get("Region") or "").strip()
        zone = (raw.get("AvailabilityZone") or "").strip()
        rows.append(
            PriceRow(
                provider=provider,
                instance_type=instance_type,
                gpu=slug,
                gpus_per_instance=int(count),
                on_demand_usd_per_hour=prices[0],
                spot_usd_per_hour=prices[1],
                billing_granularity_s=billing[0],
                billing_minimum_s=billing[1],
                region=f"{region}/{zone}" if zone else region,
                source=f"SkyPilot catalog {path}",
                date=stamp,
                notes=f"AcceleratorName {name}",
            )
        )
    _raise_problems(path, problems)
    if skipped:
        listed = ", ".join(f"{k} ({v} rows)" for k, v in sorted(skipped.items()))
        warnings.warn(f"{path}: left out accelerators ftcalc does not model: {listed}", stacklevel=3)
    return tuple(rows)


@lru_cache(maxsize=1)
def _shipped_billing() -> dict[str, tuple[int | None, int | None]]:
    """provider -> (billing_granularity_s, billing_minimum_s) most common in the shipped prices.csv."""
    try:
        shipped = load_prices()
    except DataFileError:
        return {}
    counts: dict[str, dict[tuple[int | None, int | None], int]] = {}
    for row in shipped:
        key = (row.billing_granularity_s, row.billing_minimum_s)
        counts.setdefault(row.provider, {}).setdefault(key, 0)
        counts[row.provider][key] += 1
    return {p: max(c, key=c.__getitem__) for p, c in counts.items()}


# ----------------------------------------------------------------------------------------- queries


def _as_set(value: str | Iterable[str] | None) -> set[str] | None:
    if value is None:
        return None
    return {value.lower()} if isinstance(value, str) else {v.lower() for v in value}


def prices_dataframe(
    provider: str | Iterable[str] | None = None,
    gpu: str | GPU | None = None,
    max_usd_per_gpu_hour: float | None = None,
    spot: bool = False,
    prices: Sequence[PriceRow] | None = None,
) -> pd.DataFrame:
    """The price table as a DataFrame, filtered, sorted by $ per GPU-hour.

    Args:
        provider: one provider or several ('runpod', ['aws', 'gcp']).
        gpu: any name get_gpu accepts ('h100' -> h100-sxm rows only).
        max_usd_per_gpu_hour: keep rows at or below this price per GPU-hour (of the chosen kind).
        spot: filter and sort on the spot price instead of on-demand.
        prices: rows to use; default the shipped table.
    """
    import pandas as pd

    providers = _as_set(provider)
    slug = get_gpu(gpu).gpu if gpu is not None else None
    table = prices if prices is not None else load_prices()
    if providers is not None:
        known = sorted({r.provider for r in table})
        bad = sorted(p for p in providers if p not in known)
        if bad:
            raise UnknownProviderError(f"unknown provider {', '.join(repr(b) for b in bad)}; "
                                       f"the price table has {', '.join(known)}")
    records = []
    for row in table:
        if providers is not None and row.provider not in providers:
            continue
        if slug is not None and row.gpu != slug:
            continue
        per_gpu = row.usd_per_gpu_hour(spot)
        if max_usd_per_gpu_hour is not None and (per_gpu is None or per_gpu > max_usd_per_gpu_hour):
            continue
        record = {f.name: getattr(row, f.name) for f in fields(PriceRow)}
        record["usd_per_gpu_hour"] = per_gpu
        records.append(record)
    columns = [f.name for f in fields(PriceRow)] + ["usd_per_gpu_hour"]
    frame = pd.DataFrame.from_records(records, columns=columns)
    return frame.sort_values(["usd_per_gpu_hour", "provider"], na_position="last").reset_index(drop=True)


def cheapest_instances(
    gpu: str | GPU,
    num_gpus: int,
    spot: bool = False,
    providers: str | Iterable[str] | None = None,
    *,
    include_quotes: bool | None = None,
    allow_multi_node: bool = True,
    prices: Sequence[PriceRow] | None = None,
) -> list[InstanceChoice]:
    """Per provider, the cheapest real way to get ``num_gpus`` GPUs of one kind; cheapest first.

    A plan that fits in one instance rents one instance with >= num_gpus GPUs (AWS: 2 H100s means a
    whole p5.48xlarge, 8 paid). Only when num_gpus exceeds every shape the provider has are several
    instances used, and then only its largest shape, and only if that is a full node
    (gpus_per_instance >= the GPU's max_gpus_per_node, the nodes sold with a fast fabric):
    k = ceil(num_gpus / gpus_per_instance). Several 1-GPU VMs are never combined. Ties go to fewer paid
    GPUs, then fewer instances, then the newest row.

    Args:
        gpu: any name get_gpu accepts.
        num_gpus: GPUs the plan needs (>= 1).
        spot: price with spot/interruptible rates; rows without one are skipped.
        providers: restrict to these providers.
        include_quotes: True: use guide-quoted rows too; False: list prices only; None (default): a
            provider's guide quotes only when it has no list price for this GPU.
        allow_multi_node: False drops choices with more than one instance.
        prices: rows to use; default the shipped table.
    Raises:
        InvalidArgumentError: num_gpus < 1.
        UnknownGPUError: an unknown GPU name.
    """
    if isinstance(num_gpus, bool) or not isinstance(num_gpus, int) or num_gpus < 1:
        raise InvalidArgumentError(f"num_gpus must be an integer >= 1, got {num_gpus!r}")
    spec = get_gpu(gpu)
    slug = spec.gpu
    node_gpus = spec.max_gpus_per_node  # multi-node only from full nodes
    wanted = _as_set(providers)
    by_provider: dict[str, list[PriceRow]] = {}
    for row in prices if prices is not None else load_prices():
        if row.gpu != slug or row.usd_per_hour(spot) is None:
            continue
        if wanted is not None and row.provider not in wanted:
            continue
        by_provider.setdefault(row.provider, []).append(row)

    choices = []
    for provider, rows in by_provider.items():
        listed = [r for r in rows if r.basis == "list"]
        if include_quotes is False or (include_quotes is None and listed):
            rows = listed
        if not rows:
            continue
        rows = sorted(rows, key=lambda r: r.date, reverse=True)  # on equal cost the newest row wins
        single = [r for r in rows if r.gpus_per_instance >= num_gpus]
        largest = max(r.gpus_per_instance for r in rows)
        if single:
            options = [(r, 1) for r in single]
        elif allow_multi_node and largest >= node_gpus:
            options = [
                (r, math.ceil(num_gpus / r.gpus_per_instance)) for r in rows if r.gpus_per_instance == largest
            ]
        else:
            continue
        row, k = min(
            options, key=lambda o: (o[0].usd_per_hour(spot) * o[1], o[0].gpus_per_instance * o[1], o[1])
        )
        choices.append(
            InstanceChoice(
                provider=provider,
                instance_type=row.instance_type,
                gpu=slug,
                gpus_per_instance=row.gpus_per_instance,
                num_instances=k,
                gpus_requested=num_gpus,
                gpus_paid=k * row.gpus_per_instance,
                usd_per_hour=row.usd_per_hour(spot) * k,  # type: ignore[operator]
                spot=spot,
                billing_granularity_s=row.billing_granularity_s,
                billing_minimum_s=row.billing_minimum_s,
                region=row.region,
                basis=row.basis,
                source=row.source,
                date=row.date,
                notes=row.notes,
            )
        )
    return sorted(choices, key=lambda c: (c.usd_per_hour, c.gpus_paid, c.provider))


class UnknownProviderError(InvalidArgumentError):
    """A provider name that is not in the price table."""
