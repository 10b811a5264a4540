"""Inverse questions: max_fit by bisection agrees with a scan; min_gpu; bad input."""

from __future__ import annotations

import json

import pytest

from ftcalc.cli.main import main
from ftcalc.errors import DoesNotFitError, InvalidArgumentError
from ftcalc.model.fit import max_fit, min_gpu
from ftcalc.model.memory import estimate_memory, load_coefficients
from ftcalc.model.options import make_options
from ftcalc.tables.catalog import resolve_model
from ftcalc.tables.hardware import get_gpu
from ftcalc.tables.inventory import inventory


def test_max_batch_matches_a_linear_scan():
    spec, gpu = resolve_model("8b"), get_gpu("h100")
    opts = make_options(method="lora", seq_len=2048)
    r = max_fit(spec, opts, gpu, "batch-size")
    budget = gpu.memory_bytes * 0.95
    scan = [b for b in range(1, 64) if estimate_memory(spec.arch, inventory(spec.arch),
            opts.model_copy(update={"batch_size": b}), load_coefficients()).device_used_bytes <= budget]
    assert r.best.value == max(scan)
    assert r.best.fits and not r.next_step.fits and r.next_step.value == r.best.value + 1


def test_max_seq_len_is_bounded_by_the_context():
    r = max_fit("tiny-llama", make_options(method="lora"), "h200", "seq-len")
    assert r.best.value == 2048 and r.next_step is None and "limit" in r.limit_reason


def test_bad_targets_and_impossible_fits():
    with pytest.raises(InvalidArgumentError, match="lora-r"):
        max_fit("8b", make_options(method="full"), "h100", "lora-r")
    with pytest.raises(DoesNotFitError, match="weights"):
        max_fit("405b", make_options(method="full"), "h100", "seq-len")


def test_min_gpu_orders_by_memory():
    """70B QLoRA: one 80 GB GPU holds it; a 24 GB RTX 4090 only several of them with sharded QLoRA (FSDP);
    the list runs from the least memory rented in all."""
    r = min_gpu("70b", make_options(method="qlora", seq_len=2048))
    by = {g.gpu: g for g in r.fitting}
    assert by["h100-sxm"].num_gpus == 1
    assert by["rtx-4090"].num_gpus > 1 and by["rtx-4090"].sharding == "fsdp"
    total = [g.num_gpus * g.gpu_memory_bytes for g in r.fitting]
    assert total == sorted(total)


def test_cli_json_and_errors(capsys):
    assert main(["fit", "--model", "8b", "--method", "qlora", "--gpu", "rtx-4090", "--maximize", "seq-len", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["best"]["fits"] and d["target"] == "seq-len"
    assert main(["fit", "--model", "8b", "--method", "full", "--gpu", "h100", "--maximize", "lora-r"]) == 2
    assert "does not apply" in capsys.readouterr().err
    assert main(["fit", "--model", "405b", "--method", "full", "--minimize", "gpu"]) == 2
    assert main(["fit", "--model", "8b", "--maximize", "seq-len"]) == 2  # no --gpu


def test_min_gpu_shards_what_one_gpu_cannot_hold():
    r = min_gpu("70b", make_options(method="full", gradient_checkpointing=True))
    assert r.single_gpu_device_used_bytes > 200 * 2**30
    assert r.fitting and all(g.sharding == "fsdp" and g.num_gpus > 1 for g in r.fitting)
    assert all(g.device_used_bytes < g.gpu_memory_bytes for g in r.fitting)
    assert set(r.to_dataframe()["fits"]) == {True, False}
