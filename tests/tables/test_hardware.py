"""The GPU table (data/gpus.csv) and its lookups: every row parses, aliases resolve, errors name the input."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from ftcalc._paths import data_dir
from ftcalc.errors import DataFileError, FtcalcError, UnknownGPUError
from ftcalc.tables.hardware import GPU, get_gpu, gpus_dataframe, load_gpus, normalize_gpu_name

REQUIRED_GPUS = {
    "rtx-4090",
    "rtx-6000-ada",
    "l4",
    "l40s",
    "a10g",
    "a100-40gb-pcie",
    "a100-40gb-sxm",
    "a100-80gb-pcie",
    "a100-80gb-sxm",
    "h100-pcie",
    "h100-sxm",
    "h100-nvl",
    "h200",
    "b200",
    "mi300x",
}


def _raw_rows() -> list[dict[str, str]]:
    with open(data_dir() / "gpus.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_every_row_parses_into_typed_fields():
    gpus = load_gpus()
    assert REQUIRED_GPUS <= set(gpus)
    assert len(gpus) == len(_raw_rows())  # no row silently dropped or merged
    for slug, g in gpus.items():
        assert isinstance(g, GPU) and g.gpu == slug
        assert isinstance(g.memory_bytes, int) and isinstance(g.p2p, bool)
        assert isinstance(g.max_gpus_per_node, int) and g.max_gpus_per_node >= 1
        assert g.bf16_dense_tflops > 0 and g.memory_bandwidth_gbps > 0 and g.interconnect_gbps > 0
        # the reported total sits between the marketed GB and the marketed GB read as GiB (+1 %)
        assert 0.99 <= g.memory_bytes / (g.memory_gb * 1e9) <= 1.08, slug


def test_every_row_names_its_source_and_date():
    for row in _raw_rows():
        assert row["source"].strip(), row["gpu"]
        assert row["date"].strip(), row["gpu"]


def test_dense_figures_not_sparse():
    gpus = load_gpus()
    assert gpus["h100-sxm"].bf16_dense_tflops == 989  # 1,979 is the 2:4-sparse headline
    assert gpus["rtx-4090"].bf16_dense_tflops == 165  # half-rate with FP32 accumulate
    assert gpus["mi300x"].bf16_dense_tflops == 1307
    for slug in ("a100-40gb-pcie", "a100-40gb-sxm", "a100-80gb-pcie", "a100-80gb-sxm", "a10g"):
        assert gpus[slug].fp8_dense_tflops == 0 and not gpus[slug].has_fp8
    for g in gpus.values():
        if g.has_fp8:
            assert g.fp8_dense_tflops == pytest.approx(2 * g.bf16_dense_tflops, rel=0.02), g.gpu


def test_memory_is_what_the_driver_reports():
    gpus = load_gpus()
    # measured with cuMemGetInfo on real cards (driver 580.159.04); nvidia-smi shows more
    assert gpus["h100-sxm"].memory_bytes == 85017493504 and gpus["h100-sxm"].memory_basis == "cuda_measured"
    assert gpus["h200"].memory_bytes == 150109880320
    assert gpus["h100-sxm"].memory_bytes < 81559 * 2**20  # nvidia-smi memory.total on the same card
    assert gpus["h100-pcie"].memory_bytes == 81559 * 2**20 and gpus["h100-pcie"].memory_basis == "nvidia_smi"
    assert gpus["h100-sxm"].memory_gib == pytest.approx(79.18, abs=0.01)


def test_interconnect_facts():
    gpus = load_gpus()
    assert not gpus["rtx-4090"].p2p  # P2P disabled by the driver on consumer Ada
    assert gpus["h100-sxm"].interconnect == "nvlink" and gpus["h100-sxm"].interconnect_gbps == 900
    assert gpus["b200"].interconnect_gbps == 1800
    assert gpus["mi300x"].interconnect == "xgmi" and gpus["mi300x"].form == "oam"
    assert gpus["l40s"].interconnect == "pcie"


@pytest.mark.parametrize(
    "name, slug",
    [
        ("h100", "h100-sxm"),
        ("H100", "h100-sxm"),
        ("a100-80gb", "a100-80gb-sxm"),
        ("a100-40gb", "a100-40gb-sxm"),
        ("a100", "a100-80gb-sxm"),
        ("4090", "rtx-4090"),
        ("RTX_4090", "rtx-4090"),
        ("h200-sxm", "h200"),
        ("h100-sxm", "h100-sxm"),
        ("  L40S ", "l40s"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA A100-SXM4-40GB", "a100-40gb-sxm"),
        ("NVIDIA A100 80GB PCIe", "a100-80gb-pcie"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("NVIDIA RTX 6000 Ada Generation", "rtx-6000-ada"),
        ("NVIDIA H100 NVL", "h100-nvl"),
        ("NVIDIA L4", "l4"),
        ("AMD Instinct MI300X", "mi300x"),
    ],
)
def test_aliases_and_device_names_resolve(name, slug):
    assert get_gpu(name).gpu == slug


def test_get_gpu_passes_a_gpu_through():
    g = get_gpu("h100")
    assert get_gpu(g) is g


def test_unknown_gpu_suggests_close_names():
    with pytest.raises(UnknownGPUError) as err:
        get_gpu("h1000")
    message = str(err.value)
    assert isinstance(err.value, FtcalcError)
    assert message.startswith("unknown GPU 'h1000'; did you mean ")
    assert "'h100-sxm'" in message
    assert "(see `ftcalc gpus`)" in message


def test_unknown_gpu_without_close_match_lists_known_ones():
    with pytest.raises(
        UnknownGPUError, match=r"unknown GPU 'zzz'; known GPUs: .*h100-sxm.*\(see `ftcalc gpus`\)"
    ):
        get_gpu("zzz")


def test_normalize_gpu_name():
    assert normalize_gpu_name("  NVIDIA H100 80GB_HBM3 ") == "nvidia-h100-80gb-hbm3"


def _write_table(tmp_path: Path, rows: list[dict[str, str]], drop: str | None = None) -> Path:
    columns = [c for c in rows[0] if c != drop]
    path = tmp_path / "gpus.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_user_table_is_read_from_a_path(tmp_path):
    rows = [r for r in _raw_rows() if r["gpu"] in ("h100-sxm", "l4")]
    path = _write_table(tmp_path, rows)
    assert set(load_gpus(path)) == {"h100-sxm", "l4"}
    assert get_gpu("h100", path=path).gpu == "h100-sxm"


def test_missing_column_is_a_data_file_error(tmp_path):
    path = _write_table(tmp_path, _raw_rows()[:2], drop="memory_bytes")
    with pytest.raises(DataFileError, match=r"gpus.csv: missing column\(s\) memory_bytes"):
        load_gpus(path)


def test_bad_value_names_line_and_column(tmp_path):
    rows = [dict(r) for r in _raw_rows()[:3]]
    rows[1]["memory_bandwidth_gbps"] = "fast"
    path = _write_table(tmp_path, rows)
    with pytest.raises(
        DataFileError, match=r"line 3, column 'memory_bandwidth_gbps': 'fast' is not a number"
    ):
        load_gpus(path)


def test_clashing_alias_is_rejected(tmp_path):
    rows = [dict(r) for r in _raw_rows() if r["gpu"] in ("h100-sxm", "h200")]
    rows[1]["aliases"] += ";h100"
    path = _write_table(tmp_path, rows)
    with pytest.raises(DataFileError, match=r"name 'h100' of 'h200' is already used by 'h100-sxm'"):
        load_gpus(path)


def test_dataframe_lists_every_gpu():
    frame = gpus_dataframe()
    assert len(frame) == len(load_gpus())
    assert {"gpu", "memory_bytes", "memory_gib", "bf16_dense_tflops", "source", "date"} <= set(frame.columns)


def test_lookup_imports_neither_pandas_nor_torch():
    code = (
        "import sys, ftcalc.tables.hardware as h; h.get_gpu('h100'); "
        "bad = [m for m in ('pandas', 'torch', 'numpy') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])
