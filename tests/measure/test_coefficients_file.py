"""The shipped coefficients say which script made each value; calibrate writes the user's folder, never the
package; estimates say which coefficients file they used."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import ftcalc.measure.calibrate
from ftcalc.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def _tree(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_every_shipped_value_names_the_script_that_made_it():
    d = json.loads((REPO / "data/coefficients.json").read_text())
    for section in ("memory", "throughput"):
        for key, value in d[section].items():
            if isinstance(value, (int, float)) and key != "fitted_on":
                maker = d["provenance"][section][key]
                scripts = re.findall(r"(?:scripts|lab/benchmarks)/\w+\.py", maker)
                funcs = re.findall(r"ftcalc/measure/calibrate\.py (\w+)", maker)
                assert scripts or funcs, (section, key, maker)
                assert all((REPO / s).is_file() for s in scripts), maker
                assert all(hasattr(ftcalc.measure.calibrate, f) for f in funcs), maker


def test_calibrate_writes_the_user_folder_and_estimate_reads_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    shipped = _tree(REPO / "data")
    assert main(["calibrate"]) == 0
    written = tmp_path / "xdg" / "ftcalc" / "coefficients.json"
    assert written.is_file() and (written.parent / "calibration_report.md").is_file()
    refit = json.loads(written.read_text())
    for section in ("memory", "throughput"):  # a refit names its maker for every value, as the shipped file does
        assert all(k in refit["provenance"][section] for k, v in refit[section].items()
                   if isinstance(v, (int, float)) and k != "fitted_on")
    assert _tree(REPO / "data") == shipped  # the shipped data is read-only to ftcalc
    capsys.readouterr()
    assert main(["estimate", "--model", "8b", "--gpu", "h100", "--coefficients", "user", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["coefficients_file"] == str(written)
    from ftcalc.safe_write import COEFFICIENT_MARKERS, check_output

    for own in (written, written.parent / "calibration_report.md"):  # its own output: replaced without --force
        assert check_output(own, marker=COEFFICIENT_MARKERS) == own
    (tmp_path / "mine.json").write_text("{}")
    assert main(["calibrate", "--output", str(tmp_path / "mine.json")]) == 2  # the user's file: refused
