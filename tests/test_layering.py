"""The package's layering (DEVELOPERS.md): no import cycle and no upward import, read from the source by
scripts/check_imports.py, which also runs on its own (`python scripts/check_imports.py`)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _checker():
    spec = importlib.util.spec_from_file_location("check_imports", ROOT / "scripts" / "check_imports.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_package_has_no_cycle_and_no_upward_import():
    assert _checker().check() == []


def test_the_checker_sees_an_upward_import_and_a_cycle(tmp_path):
    """A tables module importing the model (lazily, inside a function) and the model importing it back."""
    for d in ("ftcalc", "ftcalc/tables", "ftcalc/model"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "__init__.py").write_text("")
    (tmp_path / "ftcalc/tables/facts.py").write_text("def f():\n    from ftcalc.model import ledger\n")
    (tmp_path / "ftcalc/model/ledger.py").write_text("from ftcalc.tables.facts import f\n")
    problems = _checker().check(tmp_path)
    assert any(p.startswith("upward import: ftcalc/tables/facts.py:2") for p in problems), problems
    assert any(p.startswith("import cycle:") and "ftcalc.model.ledger" in p and "ftcalc.tables.facts" in p
               for p in problems), problems
    assert len(problems) == 2


def test_the_checker_allows_downward_and_same_package_imports(tmp_path):
    for d in ("ftcalc", "ftcalc/tables", "ftcalc/model"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "__init__.py").write_text("")
    (tmp_path / "ftcalc/tables/facts.py").write_text("X = 1\n")
    (tmp_path / "ftcalc/model/a.py").write_text("from ftcalc.tables import facts\nfrom ftcalc.model import b\n")
    (tmp_path / "ftcalc/model/b.py").write_text("import ftcalc.tables.facts\n")
    assert _checker().check(tmp_path) == []


def test_every_subpackage_ships_in_the_wheel():
    """pyproject.toml lists the packages explicitly (data/ ships as ftcalc._data): a subpackage missing there
    would be missing from `pip install .`."""
    import re

    text = (ROOT / "pyproject.toml").read_text()
    listed = set(re.findall(r'"(ftcalc(?:\.\w+)*)"', text.split("packages = [", 1)[1].split("]", 1)[0]))
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "ftcalc").rglob("__init__.py")}
    assert on_disk <= listed, sorted(on_disk - listed)
