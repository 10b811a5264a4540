"""Bad and edge input to every command and public API function: one line and exit code 2, never a traceback,
never an impossible number, never a changed file other than the intended output.

The explicit cases are the ones a new user hit (NaN/inf/negative values, binary files, folders, unwritable
paths, existing files as outputs); hypothesis then draws more combinations of command x flag x value.
Commands run in-process (``ftcalc.cli.main.main``) in a scratch folder whose every file is hashed before and
after; a few run as real processes to see what a shell user sees.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ftcalc
from ftcalc.cli.main import main
from ftcalc.errors import FtcalcError

REPO = Path(__file__).resolve().parents[2]
_EXAMPLES = int(os.environ.get("FTCALC_HYPOTHESIS_EXAMPLES", "150"))  # as tests/model/test_memory.py


def _hash_tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and ".pytest_cache" not in p.parts and "__pycache__" not in p.parts:
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder: a dataset, broken configs, a header-only price file, a folder, a plain file."""
    w = tmp_path_factory.mktemp("fuzz")
    shutil.copy(REPO / "data/samples/alpaca_sample.jsonl", w / "train.jsonl")
    (w / "bin.json").write_bytes(b"\xff\xfe\x00\x81binary\x00")
    (w / "bin.yaml").write_bytes(b"\xff\xfe\x00\x81binary\x00")
    cfg = json.loads((REPO / "data/models/Qwen--Qwen2.5-0.5B.json").read_text())
    cfg = cfg.get("config", cfg)
    (w / "heads0.json").write_text(json.dumps({**cfg, "num_attention_heads": 0}))
    (w / "huge.json").write_text(json.dumps({**cfg, "num_hidden_layers": 10**30}))
    (w / "header_only.csv").write_text((REPO / "data/prices.csv").read_text().splitlines()[0] + "\n")
    (w / "some_folder").mkdir()
    (w / "notes.txt").write_text("the user's own notes\n")
    return w


def _outputs(argv: list[str]) -> set[str]:
    """The files a command is asked to write (-o, --output, --plot; report's HTML twin and plots)."""
    outs = set()
    for flag in ("-o", "--output", "--plot"):
        if flag in argv:
            i = argv.index(flag) + 1
            if i < len(argv):
                outs.add(os.path.normpath(argv[i]))
    if argv and argv[0] == "report":
        outs |= {os.path.splitext(o)[0] + ext for o in outs for ext in (".md", ".html")}  # report.md's twin
        outs |= {f"{os.path.splitext(o)[0]}_files/{n}" for o in outs
                 for n in ("breakdown.png", "memory_vs_seq_len.png", "pareto.png")}
    return outs


def _no_nan(text: str) -> None:
    def refuse(c: str) -> None:
        raise AssertionError(f"JSON has {c}")

    json.loads(text, parse_constant=refuse)


def run_cli(argv: list[str], work: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``ftcalc argv`` in ``work`` and check the promises; returns (code, stdout, stderr)."""
    before = _hash_tree(work)
    data_before = _hash_tree(REPO / "data")
    cwd = os.getcwd()
    os.chdir(work)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's --help
        code = int(e.code or 0)
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    allowed = {0, 2} | ({1} if "--check" in argv else set())
    assert code in allowed, (argv, code, err)
    assert "Traceback" not in err and "Traceback" not in out, (argv, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1, (argv, err)
    if code == 0 and "--json" in argv:
        _no_nan(out)
    if code == 0 and "--json" not in argv:
        for word in ("nan h", " inf h", "-0."):
            assert word not in out.replace("headroom -0.", ""), (argv, out)
    after = _hash_tree(work)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    intended = _outputs(argv) if code == 0 else set()
    assert changed <= intended, (argv, changed - intended)
    assert _hash_tree(REPO / "data") == data_before, argv
    return code, out, err


# The cases a new user hit; each must give one line and exit 2 (or the right answer, exit 0)
CASES = [
    (["plan", "--model", "tiny-llama", "--dataset", "train.jsonl", "--device", "cpu", "-o", "train.jsonl"], 2),
    (["plan", "--model", "tiny-llama", "--dataset", "train.jsonl", "--device", "cpu", "-o", "notes.txt"], 2),
    (["estimate", "--model", "8b", "--gpu", "h100", "--dataset-tokens", "inf"], 2),
    (["recommend", "--model", "8b", "--dataset-tokens", "inf"], 2),
    (["estimate", "--model", "bin.json"], 2),
    (["run", "bin.yaml"], 2),
    (["estimate", "--model", "heads0.json"], 2),
    (["plan", "--model", "tiny-llama", "--dataset", "some_folder/", "--device", "cpu"], 2),
    (["plan", "--model", "tiny-llama", "--dataset", "train.jsonl", "--device", "cpu", "-o", "notes.txt/spec.yaml"], 2),
    (["run", "spec_missing.yaml", "--output-dir", "notes.txt/run"], 2),
    (["report", "--model", "8b", "--dataset-tokens", "10M", "-o", "notes.txt/r.md"], 2),
    (["estimate", "--model", "8b", "--plot", "notes.txt/a.png"], 2),
    (["estimate", "--model", "8b", "--plot", "a.jsonl"], 2),
    (["estimate", "--model", "8b", "--plot", "notes.txt"], 2),
    (["estimate", "--model", "8b", "--gpu", "h100", "--dataset-tokens", "10M", "--epochs", "-1"], 2),
    (["estimate", "--model", "8b", "--gpu", "h100", "--dataset-tokens", "10M", "--epochs", "nan"], 2),
    (["estimate", "--model", "8b", "--gpu", "h100", "--dataset-tokens", "10M", "--epochs", "nan", "--json"], 2),
    (["estimate", "--model", "8b", "--gpu", "h100", "--dataset-tokens", "10M", "--epochs", "0"], 2),
    (["estimate", "--model", "8b", "--gpu", "h100", "--dataset-tokens", "10M", "--epochs", "inf"], 2),
    (["estimate", "--model", "8b", "--gpu", "h100", "--num-gpus", "100000"], 2),
    (["recommend", "--model", "8b", "--dataset-tokens", "10M", "--global-batch", "0"], 2),
    (["recommend", "--model", "8b", "--dataset-tokens", "10M", "--global-batch", "-4"], 2),
    (["prices", "--provider", "foo"], 2),
    (["estimate", "--model", "huge.json"], 2),
    (["plan", "--model", "tiny-llama", "--dataset", "train.jsonl", "--device", "cpu", "--val-set-size", "100000"], 2),
    (["recommend", "--model", "8b", "--dataset-tokens", "10M", "--prices", "header_only.csv"], 2),
    (["estimate", "--model", "8b", "--method", "full", "--gpu", "h100"], 0),
    (["estimate", "--model", "8b", "--method", "full", "--gpu", "h100", "--json"], 0),
    (["estimate", "--model", "70b", "--method", "full", "--gpu", "a10", "--dataset-tokens", "10M"], 0),
    (["fit", "--model", "8b", "--minimize", "gpu", "--max-gpus", "0"], 2),
    (["fit", "--model", "8b", "--gpu", "h100", "--maximize", "seq-len", "--headroom", "nan"], 2),
    (["gpus", "--min-memory-gib", "nan"], 2),
    (["estimate", "--model", "8b", "--lora-alpha", "nan"], 2),
    (["estimate", "--model", "8b", "--seq-len", "-5"], 2),
    (["recommend", "--model", "8b", "--examples", "10", "--avg-tokens", "nan"], 2),
    (["recommend", "--model", "8b", "--dataset-tokens", "10M", "--deadline", "inf"], 2),
    (["recommend", "--model", "8b", "--dataset-tokens", "10M", "--budget", "-3"], 2),
    (["estimate", "--model", "8b", "--coefficients", "missing.json"], 2),
    (["calibrate", "--out", "notes.txt"], 2),
    (["calibrate", "--output", "train.jsonl"], 2),
    (["inventory", "--model", "bin.json"], 2),
    (["validate", "--measurements", "some_folder"], 2),
    (["validate", "--measurements", "bin.json"], 2),
    (["profile", "--model", "tiny-llama", "--steps", "0"], 2),
    (["report", "--model", "8b", "--dataset-tokens", "nan", "-o", "r.md"], 2),
    (["report", "--model", "8b", "--dataset-tokens", "10M", "-o", "notes.txt"], 0),  # writes notes.md, keeps notes.txt
    (["prices", "--gpu", "nope"], 2),
    (["estimate", "--model", "8b", "--gpu", "h100", "--num-gpus", "16"], 2),
    (["estimate", "--model", "8b", "--method", "qlora", "--precision", "32-true"], 2),
    (["recommend", "--model", "8b", "--dataset-tokens", "1e15", "--epochs", "1e300"], 2),
    (["recommend", "--model", "8b", "--examples", "99999999999999999999", "--avg-tokens", "1e300"], 2),
    (["plan", "--model", "tiny-llama", "--dataset", "train.jsonl", "--device", "cpu", "--seed", "99999999999999999999"], 2),
    (["models", "--json"], 0),
    (["schema"], 0),
]


@pytest.mark.parametrize(("argv", "expected"), CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_issue_cases(argv: list[str], expected: int, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(argv, work, capsys)
    assert code == expected, (argv, code, err)


def test_plan_o_refuses_a_user_file_but_replaces_its_own_spec(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["plan", "--model", "tiny-llama", "--dataset", "train.jsonl", "--device", "cpu", "--max-steps", "2"]
    assert run_cli([*base, "-o", "spec_fuzz.yaml"], work, capsys)[0] == 0
    assert run_cli([*base, "-o", "spec_fuzz.yaml"], work, capsys)[0] == 0  # its own spec: replaced
    code, _, err = run_cli([*base, "-o", "notes.txt"], work, capsys)
    assert code == 2 and "notes.txt" in err and "--force" in err
    code, _, err = run_cli([*base, "-o", "train.jsonl", "--force"], work, capsys)  # an input: never
    assert code == 2 and "input" in err
    (work / "spec_fuzz.yaml").unlink()


def test_fits_line_never_shows_negative_headroom(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for method, seq in (("full", "2048"), ("full", "8192"), ("lora", "131072")):
        code, out, _ = run_cli(["estimate", "--model", "8b", "--method", method, "--seq-len", seq,
                                "--gpu", "h100", "--json"], work, capsys)
        d = json.loads(out)
        assert code == 0 and (not d["fits"] or d["headroom_bytes"] >= 0)
        if not d["fits"]:
            assert d["tokens_per_second"] is None and d["hours"] is None


def test_calibrate_writes_the_user_folder_not_the_package(work: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(work / "xdg"))
    # the output check runs before the fit: a refused path costs nothing
    code, _, err = run_cli(["calibrate", "--output", "notes.txt"], work, capsys)
    assert code == 2 and "notes.txt" in err


# ----------------------------------------------------------------------------- generated cases

_BAD_NUMBERS = ["nan", "inf", "-inf", "-1", "0", "1e30", "1e300", "1.5", "abc", "", "٣", "1e-300", "99999999999999999999"]
_NUMERIC_FLAGS = {
    "estimate": ["--seq-len", "--batch-size", "--lora-r", "--lora-alpha", "--lora-dropout", "--num-gpus", "--epochs",
                 "--dataset-tokens", "--gradient-accumulation-steps"],
    "fit": ["--headroom", "--max-gpus", "--seq-len", "--lora-r"],
    "gpus": ["--min-memory-gib"],
    "recommend": ["--epochs", "--global-batch", "--max-gpus", "--top", "--headroom", "--lora-r", "--dataset-tokens",
                  "--deadline", "--budget", "--examples", "--avg-tokens"],
    "plan": ["--seq-len", "--batch-size", "--epochs", "--val-set-size", "--max-steps", "--warmup-steps", "--lr",
             "--num-gpus", "--save-steps"],
}
_BASE = {
    "estimate": ["estimate", "--model", "tiny-llama", "--gpu", "h100", "--dataset-tokens", "1M"],
    "fit": ["fit", "--model", "tiny-llama", "--gpu", "h100", "--maximize", "batch-size"],
    "gpus": ["gpus"],
    "recommend": ["recommend", "--model", "tiny-llama", "--dataset-tokens", "1M", "--gpu", "h100", "--provider", "runpod"],
    "plan": ["plan", "--model", "tiny-llama", "--dataset", "train.jsonl", "--device", "cpu", "--max-steps", "2"],
}
_PATHS = ["bin.json", "some_folder", "notes.txt", "train.jsonl", "missing.json", "notes.txt/x", "héllo\u2603.json", ""]


@settings(max_examples=_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cmd=st.sampled_from(sorted(_NUMERIC_FLAGS)), data=st.data(), json_out=st.booleans())
def test_generated_numbers(cmd: str, data: st.DataObject, json_out: bool, work: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    flag = data.draw(st.sampled_from(_NUMERIC_FLAGS[cmd]))
    value = data.draw(st.sampled_from(_BAD_NUMBERS) | st.floats(allow_nan=True, allow_infinity=True).map(repr))
    argv = [*_BASE[cmd], flag, value] + (["--json"] if json_out else [])
    run_cli(argv, work, capsys)


@settings(max_examples=_EXAMPLES // 2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.sampled_from([
    ["estimate", "--model", "{}"], ["inventory", "--model", "{}"], ["run", "{}"],
    ["plan", "--model", "tiny-llama", "--device", "cpu", "--dataset", "{}"],
    ["plan", "--model", "tiny-llama", "--device", "cpu", "--dataset", "train.jsonl", "--max-steps", "2", "-o", "{}"],
    ["estimate", "--model", "tiny-llama", "--plot", "{}"],
    ["recommend", "--model", "tiny-llama", "--dataset-tokens", "1M", "--prices", "{}"],
    ["estimate", "--model", "tiny-llama", "--coefficients", "{}"],
]), path=st.sampled_from(_PATHS))
def test_generated_paths(argv: list[str], path: str, work: Path, capsys: pytest.CaptureFixture[str],
                         tmp_path_factory: pytest.TempPathFactory) -> None:
    fresh = tmp_path_factory.mktemp("paths") / "w"  # what one example writes cannot feed the next
    shutil.copytree(work, fresh)
    run_cli([a.replace("{}", path) for a in argv], fresh, capsys)


# ----------------------------------------------------------------------------- the Python API

_API_VALUES = [float("nan"), float("inf"), -1, 0, 10**30, 1.5, "abc", "50M", None, True, b"\xff", [1]]


@settings(max_examples=_EXAMPLES, deadline=None)
@given(fn=st.sampled_from(["estimate", "recommend", "max_fit", "min_gpu", "compare"]),
       name=st.sampled_from(["seq_len", "batch_size", "epochs", "dataset_tokens", "lora_r", "lora_alpha",
                             "lora_dropout", "num_gpus", "headroom", "max_gpus"]),
       value=st.sampled_from(_API_VALUES) | st.floats() | st.integers(min_value=-(2**70), max_value=2**70))
def test_api_raises_only_ftcalc_errors(fn: str, name: str, value: object) -> None:
    from ftcalc.model.options import make_options

    try:
        if fn == "estimate":
            if name in ("headroom", "max_gpus"):
                return
            est = ftcalc.estimate("tiny-llama", gpu="h100", **({"dataset_tokens": 10**6} | {name: value}))
            for v in (est.hours, est.tokens_per_second):
                assert v is None or (math.isfinite(v) and v > 0)
        elif fn == "recommend":
            if name in ("batch_size", "lora_alpha", "lora_dropout", "num_gpus"):
                return
            kw = {"dataset_tokens": 10**6, "gpu": "h100", "provider": "runpod"} | {name: value}
            rec = ftcalc.recommend("tiny-llama", **kw)
            for p in rec.plans:  # hours and cost only with a dataset size (None is a valid value of it)
                assert math.isfinite(p.usd_per_million_tokens) and p.usd_per_million_tokens > 0
                if rec.dataset_tokens is None:
                    assert p.est_hours is None and p.est_cost_usd is None
                else:
                    assert p.est_hours > 0 and math.isfinite(p.est_cost_usd)
        elif fn == "compare":  # a bad value is a row with its error, or an FtcalcError
            if name in ("headroom", "max_gpus", "seq_len", "batch_size"):
                return
            df = ftcalc.compare(["tiny-llama"], ["lora"], ["h100"], **({"dataset_tokens": 10**6} | {name: value}))
            ok = df[df["error"].isna()] if "error" in df else df
            assert all(math.isfinite(h) and h > 0 for h in ok.get("hours", []) if h is not None)
        elif fn == "max_fit":
            kw = {name: value} if name in ("headroom",) else {}
            opts = make_options(**({} if kw or name in ("epochs", "dataset_tokens", "max_gpus") else {name: value}))
            ftcalc.max_fit("tiny-llama", opts, "h100", "batch-size", **kw)
        else:
            kw = {name: value} if name in ("headroom", "max_gpus") else {}
            opts = make_options(**({} if kw or name in ("epochs", "dataset_tokens") else {name: value}))
            ftcalc.min_gpu("tiny-llama", opts, **kw)
    except FtcalcError as e:
        msg = str(e)
        assert "\n" not in msg and "--" not in msg.split(":")[0], msg  # Python names, not CLI flags


def test_compare_takes_one_name_as_a_list_of_one() -> None:
    df = ftcalc.compare(models="tiny-llama", methods="lora", gpus="h100", seq_lens=512)
    assert len(df) == 1 and df["gpu"].iloc[0] == "h100-sxm" and df["error"].isna().all()


def test_api_accepts_the_cli_units() -> None:
    a = ftcalc.estimate("tiny-llama", gpu="h100", dataset_tokens="50M")
    b = ftcalc.estimate("tiny-llama", gpu="h100", dataset_tokens=50_000_000)
    assert a.hours == b.hours and a.dataset_tokens == 50_000_000


def test_missing_extra_is_named_before_work(monkeypatch: pytest.MonkeyPatch) -> None:
    from ftcalc import extras
    from ftcalc.errors import MissingDependencyError

    monkeypatch.setitem(extras.EXTRAS, "train", ("ftcalc_no_such_module",))
    with pytest.raises(MissingDependencyError, match=r"\[train\].*pip install '\.\[train\]' in the ftcalc source folder"):
        extras.require_extra("train", "ftcalc run")


# ----------------------------------------------------------------------------- as a shell user sees it

@pytest.mark.parametrize("argv", [
    ["estimate", "--model", "8b", "--gpu", "h100", "--dataset-tokens", "10M", "--epochs", "nan", "--json"],
    ["estimate", "--model", "bin.json"],
    ["plan", "--model", "tiny-llama", "--dataset", "train.jsonl", "--device", "cpu", "-o", "train.jsonl"],
])
def test_subprocess_one_line(argv: list[str], work: Path) -> None:
    before = _hash_tree(work)
    r = subprocess.run([sys.executable, "-m", "ftcalc.cli.main", *argv], cwd=work, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert _hash_tree(work) == before
