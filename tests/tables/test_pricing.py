"""The price table (data/prices.csv), user price files, SkyPilot catalogs and the instance chooser."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from ftcalc._paths import data_dir
from ftcalc.errors import DataFileError, FtcalcError, InvalidArgumentError
from ftcalc.tables.hardware import load_gpus
from ftcalc.tables.pricing import (
    REQUIRED_COLUMNS,
    PriceRow,
    billed_cost_usd,
    cheapest_instances,
    load_prices,
    prices_dataframe,
    skypilot_gpu_slug,
)


def _raw_rows() -> list[dict[str, str]]:
    with open(data_dir() / "prices.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _find(provider: str, gpu: str, gpus: int, usd_per_hour: float, spot: bool = False) -> list[PriceRow]:
    return [
        r
        for r in load_prices()
        if r.provider == provider
        and r.gpu == gpu
        and r.gpus_per_instance == gpus
        and r.usd_per_hour(spot) is not None
        and round(r.usd_per_hour(spot), 2) == round(usd_per_hour, 2)
    ]


# ------------------------------------------------------------------------------------ the shipped table


def test_shipped_table_loads_and_every_gpu_is_a_slug_of_gpus_csv():
    slugs = set(load_gpus())
    raw = _raw_rows()
    assert len(load_prices()) == len(raw)
    for line, row in enumerate(raw, start=2):
        assert row["gpu"] in slugs, f"line {line}: {row['gpu']!r} is not a gpus.csv slug"


def test_every_row_has_source_date_and_a_price():
    for line, row in enumerate(_raw_rows(), start=2):
        assert row["source"].strip(), line
        assert re.fullmatch(r"\d{4}(-\d{2}(-\d{2})?)?", row["date"]), line
        assert row["on_demand_usd_per_hour"] or row["spot_usd_per_hour"], line
        assert row["basis"] in ("list", "quote"), line


def test_required_providers_present():
    providers = {r.provider for r in load_prices()}
    wanted = {
        "runpod",
        "lambda",
        "coreweave",
        "vastai",
        "aws",
        "gcp",
        "azure",
        "ionet",
        "nebius",
        "saturn-cloud",
    }
    assert wanted <= providers


def test_quote_rows_say_they_are_a_guides_quote():
    for row in load_prices():
        if row.basis == "quote":
            assert "quote" in row.notes, (row.provider, row.instance_type)


# Every $ figure the seed guides quote for a GPU rental, and the row it must appear as:
# (provider, gpu, gpus_per_instance, usd_per_hour of the instance, spot)
SEED_QUOTES = [
    ("runpod", "h100-sxm", 1, 2.69, False),  # seeds/001, 004: RunPod H100 SXM $2.69
    ("runpod", "a100-80gb-sxm", 1, 1.39, False),  # seeds/001: A100 SXM 80GB $1.39
    ("runpod", "rtx-4090", 1, 0.34, False),  # seeds/001: RTX 4090 $0.34
    ("runpod", "h200", 1, 3.59, False),  # seeds/001: H200 $3.59
    ("runpod", "b200", 1, 5.98, False),  # seeds/001: B200 $5.98
    ("lambda", "h100-sxm", 1, 3.78, False),  # seeds/001: Lambda H100 $3.78
    ("runpod", "a100-80gb-pcie", 1, 1.19, False),  # seeds/004: A100 PCIe 80GB $1.19
    ("coreweave", "a100-80gb-sxm", 8, 21.60, False),  # seeds/004: 8x A100 80GB via CoreWeave $21.60/h
    ("saturn-cloud", "h100-sxm", 1, 2.95, False),  # seeds/000: $2.95/hr for H100 and H200
    ("saturn-cloud", "h200", 1, 2.95, False),
    ("ionet", "rtx-4090", 1, 0.40, False),  # seeds/003: io.net $0.40-0.80
    ("ionet", "a100-80gb-sxm", 1, 1.20, False),  # seeds/003: io.net $1.20-2.00
    ("ionet", "h100-sxm", 8, 8 * 2.10, False),  # seeds/003: io.net H100 SXM from $2.10 each, 8x
    ("runpod", "rtx-4090", 1, 0.44, False),  # seeds/003 scenario 1
    ("vastai", "rtx-4090", 1, 0.25, True),  # seeds/003 scenario 1 (a spot rate)
    ("lambda", "a100-80gb-sxm", 1, 1.29, False),  # seeds/003 scenario 2
    ("runpod", "a100-80gb-pcie", 1, 1.64, False),
    ("coreweave", "a100-80gb-sxm", 1, 2.06, False),
    ("aws", "a100-40gb-sxm", 8, 8 * 5.12, False),  # 'AWS (p4d) $5.12/hr*' per GPU
    ("gcp", "a100-40gb-sxm", 1, 3.67, False),  # 'GCP (a2) $3.67/hr'
    ("lambda", "h100-sxm", 8, 8 * 2.49, False),  # seeds/003 scenario 4, per GPU of 8x
    ("runpod", "h100-sxm", 8, 8 * 2.69, False),
    ("coreweave", "h100-sxm", 8, 8 * 2.99, False),
    ("aws", "h100-sxm", 8, 8 * 6.88, False),
]


@pytest.mark.parametrize("provider, gpu, gpus, usd_per_hour, spot", SEED_QUOTES)
def test_seed_guide_prices_are_in_the_table(provider, gpu, gpus, usd_per_hour, spot):
    assert _find(provider, gpu, gpus, usd_per_hour, spot), (provider, gpu, gpus, usd_per_hour)


def test_seed_runpod_quotes_are_community_list_prices():
    (row,) = _find("runpod", "h100-sxm", 1, 2.69)
    assert row.instance_type == "1x_H100-SXM_COMMUNITY" and row.basis == "list"
    (lam,) = _find("lambda", "h100-sxm", 1, 3.78)
    assert lam.basis == "quote" and lam.date == "2026-03"


def test_aws_big_instances_are_whole_8_gpu_nodes():
    shapes = {r.instance_type: r.gpus_per_instance for r in load_prices() if r.provider == "aws"}
    for name in (
        "p4d.24xlarge",
        "p4de.24xlarge",
        "p5.48xlarge",
        "p5e.48xlarge",
        "p5en.48xlarge",
        "p6-b200.48xlarge",
    ):
        assert shapes[name] == 8, name
    assert shapes["p5.4xlarge"] == 1


def test_runpod_rents_1_2_4_8_gpu_pods():
    counts = {r.gpus_per_instance for r in load_prices() if r.provider == "runpod" and r.gpu == "h100-sxm"}
    assert counts == {1, 2, 4, 8}


# ------------------------------------------------------------------------------------ choosing instances


def test_two_h100s_on_aws_pay_for_a_whole_p5():
    (choice,) = cheapest_instances("h100", 2, providers="aws")
    assert choice.instance_type == "p5.48xlarge"
    assert (choice.num_instances, choice.gpus_paid, choice.gpus_requested) == (1, 8, 2)
    assert choice.usd_per_hour == pytest.approx(55.04)
    assert not choice.multi_node


def test_runpod_rents_exactly_the_gpus_needed():
    (choice,) = cheapest_instances("h100-sxm", 2, providers=["runpod"])
    assert choice.instance_type == "2x_H100-SXM_COMMUNITY"
    assert choice.gpus_paid == 2 and choice.usd_per_hour == pytest.approx(5.38)


def test_one_choice_per_provider_sorted_by_cost():
    choices = cheapest_instances("h100", 8)
    providers = [c.provider for c in choices]
    assert len(providers) == len(set(providers))
    assert [c.usd_per_hour for c in choices] == sorted(c.usd_per_hour for c in choices)
    assert all(c.gpus_paid >= 8 for c in choices)


def test_beyond_one_node_rents_full_nodes():
    (choice,) = cheapest_instances("h100", 16, providers="lambda")
    assert (choice.instance_type, choice.num_instances, choice.gpus_paid) == ("gpu_8x_h100_sxm5", 2, 16)
    assert choice.multi_node and choice.usd_per_hour == pytest.approx(2 * 31.92)
    (odd,) = cheapest_instances("h100", 12, providers="aws")
    assert (odd.num_instances, odd.gpus_paid) == (2, 16)
    assert cheapest_instances("h100", 16, providers="lambda", allow_multi_node=False) == []


def test_single_gpu_vms_are_never_combined():
    # Saturn Cloud and AWS g5.xlarge are only known as 1-GPU shapes: no 2-GPU plan from them
    assert cheapest_instances("h100", 2, providers="saturn-cloud") == []
    assert cheapest_instances("a10g", 2, providers="aws") == []


def test_guide_quotes_only_where_no_list_price():
    (listed,) = cheapest_instances("h100", 1, providers="lambda")
    assert listed.basis == "list" and listed.usd_per_hour == pytest.approx(4.29)
    (quoted,) = cheapest_instances("h100", 1, providers="lambda", include_quotes=True)
    assert quoted.basis == "quote" and quoted.usd_per_hour == pytest.approx(3.78)
    (ionet,) = cheapest_instances("rtx-4090", 1, providers="ionet")  # io.net is only known from a guide
    assert ionet.basis == "quote"
    assert cheapest_instances("rtx-4090", 1, providers="ionet", include_quotes=False) == []


def test_spot_prices():
    (choice,) = cheapest_instances("h100", 8, spot=True, providers="aws")
    assert choice.spot and choice.usd_per_hour == pytest.approx(10.24)
    # GCP a3-highgpu-1g is spot-only: present for spot, absent on demand
    assert [c.instance_type for c in cheapest_instances("h100", 1, spot=True, providers="gcp")] == [
        "a3-highgpu-1g"
    ]
    assert cheapest_instances("h100", 1, providers="gcp")[0].instance_type == "a3-highgpu-8g"


def test_bad_arguments():
    with pytest.raises(InvalidArgumentError, match="num_gpus must be an integer >= 1, got 0"):
        cheapest_instances("h100", 0)
    with pytest.raises(FtcalcError, match="unknown GPU 'h1000'"):
        cheapest_instances("h1000", 1)


def test_billing_granularity_and_minimum():
    assert billed_cost_usd(60.0, 61, 60, 60) == pytest.approx(2.0)  # per-minute: 61 s bills 2 min
    assert billed_cost_usd(36.0, 30, 1, 60) == pytest.approx(0.6)  # AWS: 60 s minimum
    assert billed_cost_usd(36.0, 100.5, 1, 60) == pytest.approx(36.0 * 101 / 3600)
    assert billed_cost_usd(36.0, 100.5, None, None) == pytest.approx(36.0 * 100.5 / 3600)
    assert billed_cost_usd(3600.0, 7200, 3600, None) == pytest.approx(
        7200.0
    )  # exact hours are not rounded up
    (choice,) = cheapest_instances("h100", 16, providers="lambda")
    assert choice.cost_usd(90) == pytest.approx(2 * 31.92 * 120 / 3600)


def test_prices_dataframe_filters():
    frame = prices_dataframe(provider="aws", gpu="h100")
    assert len(frame) and set(frame["provider"]) == {"aws"} and set(frame["gpu"]) == {"h100-sxm"}
    cheap = prices_dataframe(max_usd_per_gpu_hour=1.0)
    assert len(cheap) and (cheap["usd_per_gpu_hour"] <= 1.0).all()
    assert list(cheap["usd_per_gpu_hour"]) == sorted(cheap["usd_per_gpu_hour"])
    spot = prices_dataframe(provider=["aws", "gcp"], spot=True, max_usd_per_gpu_hour=2.0)
    assert set(spot["provider"]) <= {"aws", "gcp"} and spot["spot_usd_per_hour"].notna().all()


# ------------------------------------------------------------------------------------ user price files


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _user_row(**overrides: str) -> list[str]:
    row = dict(
        provider="myco",
        instance_type="box-2",
        gpu="h100",
        gpus_per_instance="2",
        on_demand_usd_per_hour="4.00",
        spot_usd_per_hour="",
        billing_granularity_s="1",
        billing_minimum_s="",
        region="home",
        source="our contract",
        date="2026-11-01",
        notes="",
    )
    row.update(overrides)
    return [row[c] for c in REQUIRED_COLUMNS]


def test_user_price_file_is_read(tmp_path):
    path = _write(tmp_path / "p.csv", list(REQUIRED_COLUMNS), [_user_row()])
    (row,) = load_prices(path)
    assert row.gpu == "h100-sxm" and row.basis == "list" and row.gpus_per_instance == 2
    (choice,) = cheapest_instances("h100", 2, prices=load_prices(path))
    assert choice.provider == "myco" and choice.usd_per_hour == 4.0


def test_malformed_price_names_file_line_and_column(tmp_path):
    path = _write(
        tmp_path / "p.csv", list(REQUIRED_COLUMNS), [_user_row(), _user_row(on_demand_usd_per_hour="abc")]
    )
    with pytest.raises(DataFileError) as err:
        load_prices(path)
    message = str(err.value)
    assert str(path) in message
    assert "line 3, column 'on_demand_usd_per_hour': 'abc' is not a number" in message


def test_every_problem_is_reported_at_once(tmp_path):
    rows = [
        _user_row(gpu="h1000"),
        _user_row(gpus_per_instance="0"),
        _user_row(on_demand_usd_per_hour="", spot_usd_per_hour=""),
        _user_row(date="last week", source=""),
    ]
    path = _write(tmp_path / "p.csv", list(REQUIRED_COLUMNS), rows)
    with pytest.raises(DataFileError) as err:
        load_prices(path)
    message = str(err.value)
    assert "5 problem(s)" in message
    assert "line 2, column 'gpu': unknown GPU 'h1000'; did you mean" in message
    assert "line 3, column 'gpus_per_instance': '0' is out of range; expected an integer >= 1" in message
    assert "line 4, columns 'on_demand_usd_per_hour'/'spot_usd_per_hour': both empty" in message
    assert "line 5, column 'source': empty" in message
    assert "line 5, column 'date': 'last week' is not a date" in message


def test_missing_column_is_named(tmp_path):
    header = [c for c in REQUIRED_COLUMNS if c != "gpus_per_instance"]
    row = [v for c, v in zip(REQUIRED_COLUMNS, _user_row(), strict=True) if c != "gpus_per_instance"]
    path = _write(tmp_path / "p.csv", header, [row])
    with pytest.raises(
        DataFileError, match=r"p.csv: missing column\(s\) gpus_per_instance; a price file needs"
    ):
        load_prices(path)


def test_missing_file_is_a_data_file_error(tmp_path):
    with pytest.raises(DataFileError, match="cannot read the price file"):
        load_prices(tmp_path / "nope.csv")


# ------------------------------------------------------------------------------------ SkyPilot catalogs

# Columns in AWS's order (catalogs/v8/aws/vms.csv), rows shaped like the real ones; written for this test.
AWS_HEADER = [
    "InstanceType",
    "AcceleratorName",
    "AcceleratorCount",
    "vCPUs",
    "MemoryGiB",
    "GpuInfo",
    "Price",
    "SpotPrice",
    "Region",
    "AvailabilityZone",
    "Arch",
]
H100_INFO = (
    "{'Gpus': [{'Name': 'H100', 'Manufacturer': 'NVIDIA', 'Count': 8, 'MemoryInfo': {'SizeInMiB': 81920}}]}"
)
A100_INFO = (
    "{'Gpus': [{'Name': 'A100', 'Manufacturer': 'NVIDIA', 'Count': 8, 'MemoryInfo': {'SizeInMiB': 40960}}]}"
)
AWS_ROWS = [
    ["m5.large", "", "", "2.0", "8.0", "", "0.096", "0.04", "us-east-1", "use1-az1", "x86_64"],
    [
        "p5.48xlarge",
        "H100",
        "8.0",
        "192.0",
        "2048.0",
        H100_INFO,
        "55.04",
        "19.2531",
        "us-east-1",
        "use1-az2",
        "x86_64",
    ],
    ["p5.4xlarge", "H100", "1.0", "16.0", "256.0", H100_INFO, "6.88", "", "us-east-1", "use1-az1", "x86_64"],
    [
        "p4d.24xlarge",
        "A100",
        "8.0",
        "96.0",
        "1152.0",
        A100_INFO,
        "21.9576",
        "8.19",
        "us-east-1",
        "use1-az1",
        "x86_64",
    ],
    [
        "p4de.24xlarge",
        "A100-80GB",
        "8.0",
        "96.0",
        "1152.0",
        "",
        "27.447",
        "",
        "us-east-1",
        "use1-az1",
        "x86_64",
    ],
    ["p3.2xlarge", "V100", "1.0", "8.0", "61.0", "", "3.06", "0.9", "us-east-1", "use1-az1", "x86_64"],
]


def test_skypilot_vms_csv_is_accepted(tmp_path):
    (tmp_path / "aws").mkdir()
    path = _write(tmp_path / "aws" / "vms.csv", AWS_HEADER, AWS_ROWS)
    with pytest.warns(UserWarning, match=r"left out accelerators ftcalc does not model: V100 \(1 rows\)"):
        rows = load_prices(path)
    by_type = {r.instance_type: r for r in rows}
    assert set(by_type) == {
        "p5.48xlarge",
        "p5.4xlarge",
        "p4d.24xlarge",
        "p4de.24xlarge",
    }  # CPU and V100 left out
    p5 = by_type["p5.48xlarge"]
    assert (p5.provider, p5.gpu, p5.gpus_per_instance) == ("aws", "h100-sxm", 8)
    assert (p5.on_demand_usd_per_hour, p5.spot_usd_per_hour) == (55.04, 19.2531)
    assert (p5.billing_granularity_s, p5.billing_minimum_s) == (1, 60)  # taken from the shipped aws rows
    assert p5.region == "us-east-1/use1-az2"
    assert by_type["p5.4xlarge"].spot_usd_per_hour is None
    assert by_type["p4d.24xlarge"].gpu == "a100-40gb-sxm"  # SkyPilot's bare A100 is the 40 GB part
    assert by_type["p4de.24xlarge"].gpu == "a100-80gb-sxm"
    (choice,) = cheapest_instances("h100", 2, prices=rows)
    assert choice.instance_type == "p5.48xlarge" and choice.gpus_paid == 8


def test_skypilot_column_order_does_not_matter(tmp_path):
    # Lambda's order (catalogs/v8/lambda/vms.csv): Price before Region, no AZ, SpotPrice empty
    header = [
        "InstanceType",
        "AcceleratorName",
        "AcceleratorCount",
        "vCPUs",
        "MemoryGiB",
        "Price",
        "Region",
        "GpuInfo",
        "SpotPrice",
    ]
    rows = [["gpu_8x_h100_sxm5", "H100", "8.0", "208.0", "1800.0", "31.92", "us-east-1", "", ""]]
    path = _write(tmp_path / "vms.csv", header, rows)
    (row,) = load_prices(path, provider="lambda")
    assert (row.provider, row.on_demand_usd_per_hour, row.spot_usd_per_hour) == ("lambda", 31.92, None)
    assert row.billing_granularity_s == 60


def test_skypilot_bad_price_is_a_data_file_error(tmp_path):
    rows = [AWS_ROWS[1][:6] + ["n/a"] + AWS_ROWS[1][7:]]
    path = _write(tmp_path / "vms.csv", AWS_HEADER, rows)
    with pytest.raises(DataFileError, match=r"line 2, column 'Price': 'n/a' is not a number"):
        load_prices(path)


@pytest.mark.parametrize(
    "name, memory_mib, slug",
    [
        ("H100", None, "h100-sxm"),
        ("A100", None, "a100-40gb-sxm"),
        ("A100", 81920, "a100-80gb-sxm"),  # Lyceum's catalog calls its 80 GB card plain A100
        ("A100-80GB", None, "a100-80gb-sxm"),
        ("A100-80GB-SXM", None, "a100-80gb-sxm"),
        ("H200", 143771, "h200"),
        ("L40S", None, "l40s"),
        ("L4", None, "l4"),
        ("A10G", None, "a10g"),
        ("RTX4090", None, "rtx-4090"),
        ("MI300X", None, "mi300x"),
    ],
)
def test_skypilot_accelerator_names(name, memory_mib, slug):
    assert skypilot_gpu_slug(name, memory_mib) == slug
