"""``ftcalc.compare(...)``: many configurations at once, as a pandas DataFrame (notebooks).

    import ftcalc
    df = ftcalc.compare(models=["8b", "70b"], methods=["lora", "qlora"], gpus=["h100", "a100-80gb"],
                        seq_lens=[2048, 8192], batch_sizes=[1, 4], dataset_tokens=100_000_000)
    df[df.fits].sort_values("hours")

One row per (model, method, GPU, seq_len, batch_size): the memory breakdown (bytes per component),
peak allocated / reserved / device used, fits and headroom, tokens/s, hours and cost (the cheapest
on-demand price of one GPU of that type in data/prices.csv, when there is one).
"""

from __future__ import annotations

import itertools
from typing import Any

from ftcalc.errors import FtcalcError
from ftcalc.model.estimator import estimate_options
from ftcalc.model.options import make_options
from ftcalc.tables.catalog import resolve_model

__all__ = ["compare"]


def _cheapest_gpu_hour(gpu: str) -> tuple[float | None, str | None]:
    try:
        from ftcalc.tables.pricing import load_prices
    except ImportError:  # pragma: no cover
        return None, None
    best: tuple[float | None, str | None] = (None, None)
    for row in load_prices():
        if row.gpu == gpu and row.gpus_per_instance == 1:
            price = row.on_demand_usd_per_hour
            if price is not None and (best[0] is None or price < best[0]):
                best = (price, f"{row.provider} {row.instance_type}")
    return best


def compare(models: list[str], methods: list[str], gpus: list[str], seq_lens: list[int] | None = None,
            batch_sizes: list[int] | None = None, dataset_tokens: int | None = None, epochs: float = 1.0,
            **options: Any) -> Any:
    """Estimate every combination and return a DataFrame, one row a configuration.

    Args:
        models, methods, gpus: lists to combine (aliases accepted; one string is a list of one).
        seq_lens, batch_sizes: default [2048] and [1].
        dataset_tokens, epochs: adds ``hours`` and ``cost_usd`` (one GPU, cheapest single-GPU on-demand price).
        **options: any other estimate option, fixed for all rows (optimizer, precision, lora_r, ...).
    Returns:
        pandas.DataFrame with columns model, method, gpu, seq_len, batch_size, gradient_checkpointing,
        peak_allocated_bytes, peak_reserved_bytes, device_used_bytes, gpu_memory_bytes, fits,
        headroom_bytes, tokens_per_second, hours, price_usd_per_hour, price_source, cost_usd, and one
        ``mem_<component>`` column per breakdown component (bytes).
    """
    import pandas as pd

    # one name where a list is expected is that one name, not its letters
    models, methods, gpus = ([x] if isinstance(x, str) else x for x in (models, methods, gpus))
    seq_lens, batch_sizes = ([x] if isinstance(x, (int, float)) else x for x in (seq_lens, batch_sizes))
    rows = []
    prices: dict[str, tuple[float | None, str | None]] = {}
    for model, method, gpu, seq, bs in itertools.product(models, methods, gpus, seq_lens or [2048], batch_sizes or [1]):
        spec = resolve_model(model)
        try:
            est = estimate_options(spec, make_options(method=method, seq_len=seq, batch_size=bs, **options), gpu=gpu,
                                   dataset_tokens=dataset_tokens, epochs=epochs)
        except FtcalcError as e:  # e.g. seq_len beyond this model's context: a row saying so
            rows.append({"model": spec.id, "method": method, "gpu": gpu, "seq_len": seq, "batch_size": bs,
                         "error": str(e)})
            continue
        if est.gpu not in prices:
            prices[est.gpu] = _cheapest_gpu_hour(est.gpu)
        price, source = prices[est.gpu]
        row = {
            "model": est.model, "method": est.method, "gpu": est.gpu, "seq_len": est.seq_len,
            "batch_size": est.batch_size, "gradient_checkpointing": est.gradient_checkpointing,
            "peak_allocated_bytes": est.peak_allocated_bytes, "peak_reserved_bytes": est.peak_reserved_bytes,
            "device_used_bytes": est.device_used_bytes, "gpu_memory_bytes": est.gpu_memory_bytes, "fits": est.fits,
            "headroom_bytes": est.headroom_bytes, "tokens_per_second": est.tokens_per_second, "hours": est.hours,
            "price_usd_per_hour": price, "price_source": source,
            "cost_usd": (est.hours * price) if (est.hours is not None and price is not None) else None,
            "error": None,
        }
        row.update({f"mem_{k}": v for k, v in est.breakdown.items()})
        rows.append(row)
    return pd.DataFrame(rows)
