"""``ftcalc run`` on the CPU with tiny-llama: the three methods, resume, SIGTERM, and every bad input.

The smoke path: ``ftcalc plan --model tiny-llama ... --device cpu -o spec.yaml`` then
``ftcalc run spec.yaml --output-dir run/`` completes with a report. Runs are a few steps of a ~4M
parameter model at short sequence lengths, so the whole file takes well under a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from ftcalc.cli.train import main as cli  # noqa: E402
from ftcalc.errors import InvalidArgumentError  # noqa: E402
from ftcalc.train import checkpoint as ck  # noqa: E402
from ftcalc.train import runner as executor  # noqa: E402
from ftcalc.train.dataset import DatasetError  # noqa: E402
from ftcalc.train.plan import make_spec  # noqa: E402
from ftcalc.train.runner import OutputDirError, preflight_suggestion, run  # noqa: E402
from ftcalc.train.spec import load_spec, save_spec, spec_from_dict  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "data" / "samples"
ALPACA = SAMPLES / "alpaca_sample.jsonl"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the hub


def _has_bnb() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means no QLoRA here
        return False
    return True


def _spec(tmp_path: Path, method: str = "lora", dataset: Path = ALPACA, name: str = "spec.yaml", **kw) -> Path:
    """A short CPU spec written to tmp_path/name; keyword arguments go to make_spec, spec_update to the spec."""
    update = kw.pop("spec_update", {})
    args = dict(device="cpu", seq_len=64, batch_size=2, max_steps=4, out_path=tmp_path / name)
    args.update(kw)
    spec = make_spec("tiny-llama", method, dataset, **args)
    for section, values in update.items():
        spec = spec.model_copy(update={section: getattr(spec, section).model_copy(update=values)})
    return save_spec(spec, tmp_path / name)


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.is_file()}


# --------------------------------------------------------------------------- the smoke path


@pytest.mark.parametrize("method", [
    "full", "lora", pytest.param("qlora", marks=pytest.mark.skipif(not _has_bnb(), reason="needs bitsandbytes"))])
def test_cpu_smoke_plan_then_run(tmp_path, method, capsys):
    spec = tmp_path / "spec.yaml"
    out = tmp_path / "run"
    plan = ["plan", "--model", "tiny-llama", "--method", method, "--dataset", str(ALPACA), "--max-steps", "4",
            "--device", "cpu", "-o", str(spec)]
    if method == "lora":
        plan.append("--merge-adapter")
    assert cli(plan) == 0
    assert cli(["run", str(spec), "--output-dir", str(out)]) == 0
    report = json.loads((out / "run_report.json").read_text())
    assert report["status"] == "completed"
    m = report["measured"]
    assert m["final_step"] == 4 and m["tokens_per_second"] > 0 and m["step_seconds_median"] > 0
    assert 0 < m["train_loss"] < 20
    assert report["predicted"]["device_used_bytes"] > 0 and report["versions"]["torch"]
    assert [r["step"] for r in _log(out)] == [1, 2, 3, 4]
    final = out / "final"
    if method == "full":
        assert (final / "model.safetensors").is_file() and (final / "config.json").is_file()
    else:
        assert (final / "adapter_model.safetensors").is_file() and (final / "adapter_config.json").is_file()
    assert (final / "tokenizer.json").is_file()
    if method == "lora":
        assert (out / "merged" / "model.safetensors").is_file()
    assert "completed: step 4/4" in capsys.readouterr().out


def test_completion_only_run_trains_on_fewer_tokens_than_all(tmp_path):
    """plan --train-on completion reaches the run: the same steps, a different loss (fewer tokens count)."""
    from ftcalc.train.spec import load_spec

    losses = {}
    for train_on in ("all", "completion"):
        spec, out = tmp_path / f"{train_on}.yaml", tmp_path / train_on
        assert cli(["plan", "--model", "tiny-llama", "--method", "lora", "--dataset", str(ALPACA), "--max-steps", "2",
                    "--device", "cpu", "--train-on", train_on, "-o", str(spec)]) == 0
        assert load_spec(spec).data.train_on == train_on
        assert cli(["run", str(spec), "--output-dir", str(out)]) == 0
        report = json.loads((out / "run_report.json").read_text())
        assert report["status"] == "completed" and report["measured"]["final_step"] == 2
        losses[train_on] = report["measured"]["train_loss"]
    assert losses["all"] != losses["completion"], losses


def test_chat_with_validation_and_text_with_packing(tmp_path):
    chat = _spec(tmp_path, "lora", SAMPLES / "chat_sample.jsonl", name="chat.yaml", seq_len=128, val_set_size=8,
                 spec_update={"training": {"eval_steps": 2}})
    rep = run(chat, output_dir=tmp_path / "chat")
    assert rep["status"] == "completed" and rep["data"]["val_sequences"] == 8
    vals = [r["val_loss"] for r in _log(tmp_path / "chat") if "val_loss" in r]
    assert len(vals) == 2 and all(0 < v < 20 for v in vals)  # at step 2 and at the end
    assert rep["measured"]["val_loss"] == vals[-1]

    text = _spec(tmp_path, "full", SAMPLES / "text_sample.jsonl", name="text.yaml", sample_packing=True,
                 max_steps=2)
    rep = run(text, output_dir=tmp_path / "text")
    assert rep["status"] == "completed" and rep["data"]["truncated"] == 0
    assert rep["data"]["train_sequences"] < 100  # 100 rows packed into fewer, full sequences


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("method", ["lora", "full"])
def test_kill_then_resume_ends_with_the_same_loss(tmp_path, method):
    """A run killed (no chance to save) after step 5 resumes from step 4 and ends exactly as one never killed."""
    spec = _spec(tmp_path, method, max_steps=6, save_steps=2, gradient_accumulation_steps=2, val_set_size=4,
                 spec_update={"training": {"eval_steps": 3}})
    ref = run(spec, output_dir=tmp_path / "a")
    out = tmp_path / "b"
    with pytest.raises(executor._SimulatedKill):
        run(spec, output_dir=out, _stop_after_step=5)
    assert ck.latest_checkpoint(out)[0] == 4
    root = ck.checkpoints_root(out)
    (root / ".tmp-step-00000006").mkdir()  # a save that a kill interrupted
    (root / "step-00000005").mkdir()  # a folder without its COMPLETE marker
    lines: list[str] = []
    rep = run(spec, output_dir=out, resume=True, log=lines.append)
    assert any("resumed from" in line and "step-00000004" in line for line in lines)
    assert rep["status"] == "completed" and rep["measured"]["resumed_from_step"] == 4
    assert rep["measured"]["train_loss"] == ref["measured"]["train_loss"]  # exactly, not approximately
    assert rep["measured"]["val_loss"] == ref["measured"]["val_loss"]
    a = {r["step"]: r["loss"] for r in _log(tmp_path / "a") if "loss" in r}
    b = {r["step"]: r["loss"] for r in _log(out) if "loss" in r}
    assert a == b
    from safetensors.torch import load_file

    name = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    wa, wb = load_file(tmp_path / "a" / "final" / name), load_file(out / "final" / name)
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    assert [s for s, _ in ck.complete_checkpoints(out)] == [2, 4]  # save_total_limit 2; step-5 stub ignored
    assert not (root / ".tmp-step-00000006").exists()


def test_sigterm_mid_accumulation_then_resume_same_loss(tmp_path, monkeypatch):
    """SIGTERM during a half-accumulated step: the checkpoint is of the last whole step, and resuming from it
    reproduces the uninterrupted run (data order, optimizer, scheduler and RNG state restored)."""
    from ftcalc.train import recipe

    spec = _spec(tmp_path, "lora", max_steps=5, gradient_accumulation_steps=2)
    ref = run(spec, output_dir=tmp_path / "a")
    real_step = recipe.train_step
    calls = {"n": 0}

    def step_then_signal(*args, **kwargs):
        calls["n"] += 1
        value = real_step(*args, **kwargs)
        if calls["n"] == 7:  # the first micro-batch of step 4
            os.kill(os.getpid(), signal.SIGTERM)
        return value

    monkeypatch.setattr(recipe, "train_step", step_then_signal)
    out = tmp_path / "b"
    rep = run(spec, output_dir=out)
    assert rep["status"] == "interrupted" and rep["measured"]["final_step"] == 3
    assert ck.latest_checkpoint(out)[0] == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))
    monkeypatch.setattr(recipe, "train_step", real_step)
    rep = run(spec, output_dir=out, resume=True)
    assert rep["status"] == "completed"
    assert rep["measured"]["train_loss"] == ref["measured"]["train_loss"]


def test_sigterm_saves_a_checkpoint_and_exits_zero(tmp_path):
    """A real process, a real signal: checkpoint written, report says interrupted, exit code 0, in bounded time."""
    spec = _spec(tmp_path, "lora", max_steps=2000, batch_size=1)
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "ftcalc.executor", str(spec), "--output-dir", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log = out / "train_log.jsonl"
    deadline = time.monotonic() + 180
    try:
        while not (log.is_file() and len(log.read_text().splitlines()) >= 2):  # poll: training has started
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no training step within 180 s"
            time.sleep(0.05)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # the test failed: do not leave the trainer running
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert time.monotonic() - t0 < 60
    assert "received SIGTERM" in output
    report = json.loads((out / "run_report.json").read_text())
    assert report["status"] == "interrupted"
    step = report["measured"]["final_step"]
    assert 2 <= step < 2000
    assert ck.latest_checkpoint(out)[0] == step and report["latest_checkpoint"].endswith(f"step-{step:08d}")
    lines: list[str] = []
    with pytest.raises(executor._SimulatedKill):  # resumes at the next step (then stops, to keep this short)
        run(spec, output_dir=out, resume=True, log=lines.append, _stop_after_step=step + 2)
    assert any(f"(step {step} of 2000)" in line for line in lines)
    assert _log(out)[-1]["step"] == step + 1


# --------------------------------------------------------------------------- bad input


def test_output_dir_holding_another_run_is_left_alone(tmp_path):
    spec = _spec(tmp_path, "lora", max_steps=2)
    out = tmp_path / "run"
    run(spec, output_dir=out)
    before = _snapshot(out)
    other = _spec(tmp_path, "lora", name="other.yaml", max_steps=2, learning_rate=1e-3)
    with pytest.raises(OutputDirError, match="holds another run .* differs in training.learning_rate"):
        run(other, output_dir=out)
    with pytest.raises(OutputDirError, match="holds another run"):
        run(other, output_dir=out, resume=True)
    with pytest.raises(OutputDirError, match="holds this spec's completed run"):
        run(spec, output_dir=out)
    rep = run(spec, output_dir=out, resume=True)  # completed: nothing to do
    assert rep["status"] == "completed"
    assert _snapshot(out) == before
    unfinished = tmp_path / "unfinished"
    with pytest.raises(executor._SimulatedKill):
        run(spec, output_dir=unfinished, _stop_after_step=1)
    with pytest.raises(OutputDirError, match="holds a run of this spec .*pass --resume"):
        run(spec, output_dir=unfinished)


def test_output_dir_with_foreign_files(tmp_path):
    spec = _spec(tmp_path, "lora", max_steps=2)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(OutputDirError, match=r"not empty \(notes.txt\) and holds no ftcalc run"):
        run(spec, output_dir=out)
    assert (out / "notes.txt").read_text() == "keep me" and len(list(out.iterdir())) == 1
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(OutputDirError, match="not a folder"):
        run(spec, output_dir=afile)


def test_spec_inside_its_own_output_dir_is_allowed(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    spec = _spec(out, "lora", max_steps=1)
    assert run(spec, output_dir=out)["status"] == "completed"


@pytest.mark.parametrize(("lines", "message"), [
    (['{"instruction": "a", "output": "b"}'] * 8 + ["{oops"], r"d.jsonl:9: not JSON"),
    (['{"instruction": "a", "output": "b"}', '{"instruction": "a"}'], r"d.jsonl:2: alpaca row needs"),
    ([], r"no usable alpaca examples \(0 lines\)"),
])
def test_bad_dataset_exits_2_with_one_line(tmp_path, capsys, lines, message):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(x + "\n" for x in lines))
    spec = spec_from_dict({"spec_version": 1, "model": {"base_model": "tiny-llama", "init": "random"},
                           "data": {"path": "d.jsonl", "format": "alpaca"}, "hardware": {"device": "cpu"},
                           "sequence_len": 64})
    save_spec(spec, tmp_path / "spec.yaml")
    out = tmp_path / "run"
    assert cli(["run", str(tmp_path / "spec.yaml"), "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ftcalc: error: ")
    import re

    assert re.search(message, err[0]), err[0]
    assert not out.exists()  # nothing was created before the data was checked


def test_bad_lines_skipped_when_asked(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(ALPACA.read_text().replace("\n", "\nnot json\n", 3))
    spec = _spec(tmp_path, "lora", data, max_steps=1, on_bad_line="skip")
    lines: list[str] = []
    rep = run(spec, output_dir=tmp_path / "run", log=lines.append)
    assert rep["data"]["skipped_lines"] == 3
    assert any("skipped 3 bad lines" in line and "d.jsonl:2: not JSON" in line for line in lines)


def test_chat_template_missing(tmp_path):
    import shutil

    tok = tmp_path / "tok"
    shutil.copytree(ROOT / "data" / "tokenizers" / "tiny-llama", tok)
    cfg = json.loads((tok / "tokenizer_config.json").read_text())
    cfg.pop("chat_template")
    (tok / "tokenizer_config.json").write_text(json.dumps(cfg))
    spec = _spec(tmp_path, "lora", SAMPLES / "chat_sample.jsonl", tokenizer=str(tok))
    with pytest.raises(DatasetError, match="chat template"):
        run(spec, output_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_newer_spec_version_exits_2(tmp_path, capsys):
    spec = _spec(tmp_path, "lora")
    text = spec.read_text().replace("spec_version: 1 ", "spec_version: 99 ")
    spec.write_text(text)
    assert cli(["run", str(spec)]) == 2
    assert "spec_version 99" in capsys.readouterr().err


def test_options_that_cannot_apply(tmp_path):
    spec = _spec(tmp_path, "full", merge_adapter=True)
    with pytest.raises(InvalidArgumentError, match="no adapter to merge"):
        run(spec, output_dir=tmp_path / "a")
    spec = _spec(tmp_path, "lora", name="b.yaml")
    with pytest.raises(InvalidArgumentError, match="--record: measurements are of CUDA runs"):
        run(spec, output_dir=tmp_path / "b", record=True)


def test_preflight_suggestion_uses_the_estimator():
    spec = spec_from_dict({"spec_version": 1, "model": {"base_model": "8b"}, "method": "full",
                           "gradient_checkpointing": False, "micro_batch_size": 8, "sequence_len": 2048,
                           "data": {"path": "d", "format": "text"}})
    hint = preflight_suggestion(spec, 75 * 2**30)
    assert hint and ("qlora" in hint or "micro_batch_size" in hint or "gradient_checkpointing" in hint)
    assert preflight_suggestion(spec, 1) is None


# --------------------------------------------------------------------------- CUDA


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_cuda_run_records_memory_and_preflight_refuses(tmp_path):
    spec = _spec(tmp_path, "lora", device="cuda", gpu=None, max_steps=4)
    rec = tmp_path / "rows.jsonl"
    rep = run(spec, output_dir=tmp_path / "run", record=True, record_file=str(rec))
    m = rep["measured"]
    assert rep["status"] == "completed" and m["peak_allocated_bytes"] > 0 and m["device_used_bytes"] > 0
    assert "device_used_bytes" in rep["relative_errors"]
    row = json.loads(rec.read_text().splitlines()[-1])
    assert row["source"] == "ftcalc run" and row["outcome"] == "ok" and row["tokens_per_second"] > 0
    huge = load_spec(spec)
    huge = huge.model_copy(update={"predicted": huge.predicted.model_copy(update={"device_used_bytes": 10**15})})
    save_spec(huge, tmp_path / "huge.yaml")
    with pytest.raises(executor.PreflightError, match="pre-flight.*--force"):
        run(tmp_path / "huge.yaml", output_dir=tmp_path / "huge")
