"""FSDP2 with random weights built on the meta device and materialized per shard (recipe.build_model_sharded),
on 2 CPU processes: every parameter is a real shard (about half of it per rank), the rotary buffers are
back, and three training steps give finite losses; for QLoRA, the gathered 4-bit rows and each rank's
quantization state reproduce the seeded weight. The same code runs on GPUs in ftcalc.measure.profile_dist and
`ftcalc run` (measured on 2x and 4xH200, sharded QLoRA included: docs/multi-gpu.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("accelerate")
pytest.importorskip("peft")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_sharded_random_build_trains(method, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         str(ROOT / "tests" / "train" / "fsdp_cpu_worker.py"), method, str(tmp_path)],
        capture_output=True, text=True, timeout=240, env=env, cwd=ROOT)
    lines = [json.loads(p.read_text()) for p in sorted(tmp_path.glob("rank*.json"))]
    assert len(lines) == 2, out.stdout[-2000:] + out.stderr[-3000:]
    for r in lines:
        assert r["meta_left"] == []
        assert r["inv_freq_ok"]
        assert r["fsdp_modules"] >= 3  # decoder layers, embedding, tail, root
        assert 0.45 * r["full"] <= r["local"] <= 0.55 * r["full"] + 1000, r
        assert len(r["losses"]) == 3 and all(0 < v < 20 for v in r["losses"]), r
        if method == "qlora":  # FSDP-QLoRA: the packed 4-bit rows sharded, the quantization state per rank
            assert r["n_4bit"] == 28  # 4 layers x 7 Linears
            assert r["packed_equal"], r  # the gathered rows are the seeded weight's packed rows, bit for bit
            assert r["dequant_rel_err"] < 0.15, r  # NF4's error on N(0, 0.02): the state describes the rows
            assert r["trainable_dtypes"] == ["torch.bfloat16"]  # adapters in bf16, as TRL keeps them


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("cpu_offload", [False, True])
def test_offloads_params_reads_accelerates_plugin(version, cpu_offload):
    """accelerate turns cpu_offload=False into FSDP2's base OffloadPolicy(), which is truthy: the sharded
    build once read it with bool() and materialized every non-offloaded 70B shard in host memory (plan h's
    first runs on 8xH200 failed on it)."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    from ftcalc.train.recipe import offloads_params

    plugin = FullyShardedDataParallelPlugin(fsdp_version=version, cpu_offload=cpu_offload)
    assert offloads_params(plugin) is cpu_offload
