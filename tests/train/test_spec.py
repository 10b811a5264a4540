"""The training spec (ftcalc/train/spec.py), ftcalc plan (ftcalc/train/plan.py) and the accelerate/SkyPilot emitters.

None of this needs torch; one test checks that none of it imports torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ftcalc.cli.train import main as cli
from ftcalc.errors import FtcalcError
from ftcalc.train.launch import emit_accelerate_config, emit_skypilot_task
from ftcalc.train.plan import detect_format, make_spec
from ftcalc.train.spec import (
    SPEC_VERSION,
    SpecError,
    SpecVersionError,
    TrainingSpec,
    dump_spec,
    load_spec,
    save_spec,
    spec_from_dict,
    spec_json_schema,
)

ROOT = Path(__file__).resolve().parents[2]
ALPACA = ROOT / "data" / "samples" / "alpaca_sample.jsonl"
CHAT = ROOT / "data" / "samples" / "chat_sample.jsonl"
TEXT = ROOT / "data" / "samples" / "text_sample.jsonl"


def _minimal(**extra) -> dict:
    return {"spec_version": 1, "model": {"base_model": "tiny-llama"},
            "data": {"path": "d.jsonl", "format": "alpaca"}, **extra}


def test_defaults_and_options_share_names():
    spec = spec_from_dict(_minimal(method="qlora", sequence_len=512, micro_batch_size=4,
                                   lora={"lora_r": 8, "quant_type": "fp4"}))
    opts = spec.to_options()
    assert (opts.method, opts.seq_len, opts.batch_size, opts.lora_r, opts.quant_type) == ("qlora", 512, 4, 8, "fp4")
    assert opts.checkpointing  # the method default is applied by TrainingOptions
    assert spec.global_batch_size == 4


def test_axolotl_aliases_accepted():
    spec = spec_from_dict(_minimal(lora={"lora_target_modules": "q_proj,v_proj"},
                                   data={"path": "d.jsonl", "format": "text", "packing": True}))
    assert spec.lora.lora_targets == ["q_proj", "v_proj"]
    assert spec.data.sample_packing is True


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_round_trip(tmp_path, fmt):
    spec = spec_from_dict(_minimal(method="full", training={"max_steps": 7, "learning_rate": 3e-5}))
    path = save_spec(spec, tmp_path / f"spec.{fmt}")
    assert load_spec(path) == spec
    if fmt == "yaml":
        text = path.read_text()
        assert text.startswith("# ftcalc training spec")
        assert "max_steps: 7  # optimizer steps" in text  # every key carries its description


def test_unknown_keys_named_all_at_once():
    with pytest.raises(SpecError) as e:
        spec_from_dict(_minimal(bogus=1, model={"base_model": "x", "colour": "red"}))
    msg = str(e.value)
    assert "unknown key 'bogus'" in msg and "unknown key 'model.colour'" in msg


def test_bad_values_named():
    with pytest.raises(SpecError, match=r"data.format='csv': expected 'alpaca', 'chat' or 'text'"):
        spec_from_dict(_minimal(data={"path": "d", "format": "csv"}))
    with pytest.raises(SpecError, match="micro_batch_size=0"):
        spec_from_dict(_minimal(micro_batch_size=0))
    with pytest.raises(SpecError, match="'model' is required"):
        spec_from_dict({"spec_version": 1, "data": {"path": "d", "format": "text"}})


def test_inconsistent_hardware_refused():
    with pytest.raises(SpecError, match="strategy single with 2 GPUs"):
        spec_from_dict(_minimal(hardware={"num_gpus": 2}))
    with pytest.raises(SpecError, match="device cpu with several processes runs DDP over gloo"):
        spec_from_dict(_minimal(hardware={"num_gpus": 2, "device": "cpu"}, distribution={"strategy": "fsdp"}))
    cpu_ddp = spec_from_dict(_minimal(hardware={"num_nodes": 2, "device": "cpu"}, distribution={"strategy": "ddp"}))
    assert cpu_ddp.hardware.world_size == 2
    with pytest.raises(SpecError, match="needs more than one GPU"):
        spec_from_dict(_minimal(distribution={"strategy": "fsdp"}))


def test_newer_spec_version_refused(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_minimal(spec_version=SPEC_VERSION + 1, future_key=1)))
    with pytest.raises(SpecVersionError, match=f"spec_version {SPEC_VERSION + 1}.*upgrade ftcalc"):
        load_spec(path)


def test_missing_version_and_malformed_files(tmp_path):
    p = tmp_path / "a.yaml"
    p.write_text("model: {base_model: x}\n")
    with pytest.raises(SpecError, match="no spec_version"):
        load_spec(p)
    p.write_text("model: [unclosed\n")
    with pytest.raises(SpecError, match=r"a.yaml:\d+: malformed YAML"):
        load_spec(p)
    j = tmp_path / "a.json"
    j.write_text("{")
    with pytest.raises(SpecError, match="malformed JSON"):
        load_spec(j)
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "missing.yaml")


def test_fingerprint_ignores_output_and_prediction():
    a = spec_from_dict(_minimal())
    b = spec_from_dict(_minimal(output={"save_steps": 9, "output_dir": "elsewhere"},
                                predicted={"device_used_bytes": 123}, hardware={"gpu": "h200"}))
    c = spec_from_dict(_minimal(training={"learning_rate": 1e-3}))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


def test_schema():
    schema = spec_json_schema()
    assert schema["title"] == "ftcalc training spec"
    assert {"model", "method", "data", "training", "hardware", "distribution", "output", "predicted"} <= set(
        schema["properties"])
    assert schema["additionalProperties"] is False
    json.dumps(schema)


def test_schema_command(capsys):
    assert cli(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["$id"].endswith(f"spec-v{SPEC_VERSION}.json")


# --------------------------------------------------------------------------- plan


@pytest.mark.parametrize(("path", "fmt"), [(ALPACA, "alpaca"), (CHAT, "chat"), (TEXT, "text")])
def test_detect_format(path, fmt):
    assert detect_format(path) == fmt


def test_plan_cpu_smoke(tmp_path):
    out = tmp_path / "spec.yaml"
    assert cli(["plan", "--model", "tiny-llama", "--method", "qlora", "--dataset", str(ALPACA), "--max-steps", "4",
                "--device", "cpu", "-o", str(out)]) == 0
    spec = load_spec(out)
    assert spec.model.base_model == "ftcalc/tiny-llama" and spec.model.init == "random"
    assert spec.hardware.device == "cpu" and spec.training.max_steps == 4
    assert spec.gradient_checkpointing is True  # resolved, not null
    assert spec.predicted.device_used_bytes > 0 and spec.predicted.total_steps == 4
    assert spec.predicted.tokens_per_second is None  # no GPU named
    assert 64 <= spec.sequence_len <= 512 and spec.sequence_len % 64 == 0  # from the data, not 2048
    assert Path(spec.data.path).is_absolute()  # the dataset is outside the spec's folder


def test_plan_relative_paths_inside_spec_folder(tmp_path):
    data = tmp_path / "data" / "train.jsonl"
    data.parent.mkdir()
    data.write_bytes(TEXT.read_bytes())
    spec = make_spec("tiny-llama", "lora", data, out_path=tmp_path / "spec.yaml", device="cpu", max_steps=2)
    assert spec.data.path == "data/train.jsonl"


def test_plan_on_gpus_predicts_time_and_cost(tmp_path):
    spec = make_spec("8b", "lora", ALPACA, gpu="h100", num_gpus=2, seq_len=512, batch_size=4, max_steps=100,
                     init="random")
    p = spec.predicted
    assert spec.distribution.strategy == "ddp" and spec.hardware.world_size == 2
    assert p.tokens_per_second > 0 and p.hours > 0
    assert p.total_tokens == 100 * 4 * 2 * 512
    assert p.hours == pytest.approx(p.total_tokens / (p.tokens_per_second * 2) / 3600, rel=1e-4)
    if p.usd_per_hour is not None:
        assert p.cost_usd == pytest.approx(p.usd_per_hour * p.hours, rel=1e-3)
    full = make_spec("8b", "full", ALPACA, gpu="h100", num_gpus=4, seq_len=512, max_steps=10, init="random")
    assert full.distribution.strategy == "fsdp"


def test_plan_refuses_bad_datasets(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": \n')
    assert cli(["plan", "--model", "tiny-llama", "--dataset", str(bad), "--device", "cpu"]) == 2
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(FtcalcError, match="empty dataset"):
        make_spec("tiny-llama", "lora", empty, device="cpu")
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(FtcalcError, match="cannot tell the format.*--format"):
        make_spec("tiny-llama", "lora", odd, device="cpu")
    with pytest.raises(FtcalcError, match="fewer than one step"):
        make_spec("tiny-llama", "lora", TEXT, device="cpu", batch_size=64, gradient_accumulation_steps=4)


def test_plan_needs_model_and_dataset(capsys):
    assert cli(["plan", "--device", "cpu"]) == 2
    assert "needs --model and --dataset" in capsys.readouterr().err


def test_from_recommendation(capsys):
    import importlib.util

    if importlib.util.find_spec("ftcalc.solver.search") is None:
        assert cli(["plan", "--model", "8b", "--dataset", str(ALPACA), "--from-recommendation", "1"]) == 2
        assert "needs the solver" in capsys.readouterr().err
        return
    spec = make_spec("8b", "auto", ALPACA, from_recommendation=1, seq_len=256, num_epochs=50, init="random")
    assert spec.data.sample_packing  # the solver counts packed tokens
    p = spec.predicted
    assert spec.hardware.device == "cuda" and spec.hardware.gpu == p.gpu
    assert p.cost_usd > 0 and p.hours > 0 and p.provider and p.instance_type
    assert spec.method in ("full", "lora", "qlora") and spec.distribution.strategy in ("single", "ddp", "fsdp")
    with pytest.raises(FtcalcError, match="the recommendation has .* plans"):
        make_spec("8b", "lora", ALPACA, from_recommendation=10**6, seq_len=256, num_epochs=50)


def test_planner_never_imports_torch(tmp_path):
    code = (
        "import sys, ftcalc.train.spec, ftcalc.train.plan, ftcalc.cli.train, ftcalc.train.dataset, ftcalc.train.checkpoint\n"
        "from ftcalc.cli.train import main\n"
        f"assert main(['plan', '--model', 'tiny-llama', '--dataset', {str(ALPACA)!r}, '--device', 'cpu',"
        f" '--max-steps', '2', '-o', {str(tmp_path / 's.yaml')!r}, '--emit', 'accelerate']) == 0\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'accelerate', 'bitsandbytes') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- emitters


def test_fsdp_qlora_with_cpu_offload_is_refused_at_load():
    """Sharded QLoRA runs under FSDP, but the recipe does not offload 4-bit weights to the host: the spec says so
    when it is read, before any process starts."""
    with pytest.raises(SpecError, match="offload_params with qlora"):
        spec_from_dict(_minimal(method="qlora", hardware={"num_gpus": 2, "gpu": "h200"},
                                distribution={"strategy": "fsdp", "fsdp": {"offload_params": True}}))
    ok = spec_from_dict(_minimal(method="qlora", hardware={"num_gpus": 2, "gpu": "h200"},
                                 distribution={"strategy": "fsdp"}))
    assert ok.distribution.strategy == "fsdp" and ok.method == "qlora"


def test_emit_accelerate_fsdp_and_ddp():
    fsdp = spec_from_dict(_minimal(method="full", hardware={"num_gpus": 8, "gpu": "h100"},
                                   distribution={"strategy": "fsdp"}))
    cfg = yaml.safe_load(emit_accelerate_config(fsdp, "llama"))
    assert cfg["distributed_type"] == "FSDP" and cfg["num_processes"] == 8
    assert cfg["mixed_precision"] == "no"  # the recipe autocasts
    f = cfg["fsdp_config"]
    assert f["fsdp_version"] == 2 and f["fsdp_reshard_after_forward"] is True
    assert f["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    ddp = spec_from_dict(_minimal(hardware={"num_gpus": 2}, distribution={"strategy": "ddp"}))
    cfg = yaml.safe_load(emit_accelerate_config(ddp, "qwen2"))
    assert cfg["distributed_type"] == "MULTI_GPU" and "fsdp_config" not in cfg


def test_emit_skypilot_multi_node():
    spec = spec_from_dict(_minimal(method="full", hardware={"gpu": "h100", "num_gpus": 8, "num_nodes": 2},
                                   distribution={"strategy": "fsdp"}))
    task = yaml.safe_load(emit_skypilot_task(spec, "spec.yaml"))
    assert task["resources"]["accelerators"] == "H100:8"
    assert task["num_nodes"] == 2 and task["envs"]["MASTER_PORT"]
    assert "ftcalc_dist/ftcalc-" in task["setup"]  # this ftcalc's wheel, not a package index name
    # every node runs ftcalc run; the executor turns SkyPilot's variables into torchrun's rendezvous
    assert task["run"].strip().splitlines()[-1] == "ftcalc run spec.yaml --output-dir run --resume"
    single = spec_from_dict(_minimal(hardware={"gpu": "h200"}))
    task = yaml.safe_load(emit_skypilot_task(single))
    assert task["resources"]["accelerators"] == "H200:1" and task["run"].strip().endswith("--resume")
    assert "envs" not in task
    with pytest.raises(SpecError, match="needs a GPU plan"):
        emit_skypilot_task(spec_from_dict(_minimal(hardware={"device": "cuda"})))
    cpu = yaml.safe_load(emit_skypilot_task(spec_from_dict(_minimal(hardware={"device": "cpu"}))))
    assert "accelerators" not in cpu["resources"] and cpu["resources"]["cpus"]


def test_plan_emit_writes_files(tmp_path):
    out = tmp_path / "spec.yaml"
    assert cli(["plan", "--model", "8b", "--method", "full", "--dataset", str(ALPACA), "--gpu", "h100",
                "--num-gpus", "8", "--seq-len", "512", "--max-steps", "10", "--init", "random", "-o", str(out),
                "--emit", "accelerate", "--emit", "skypilot"]) == 0
    assert yaml.safe_load((tmp_path / "accelerate_config.yaml").read_text())["distributed_type"] == "FSDP"
    assert yaml.safe_load((tmp_path / "sky.yaml").read_text())["resources"]["accelerators"] == "H100:8"


def test_dump_is_valid_yaml_for_odd_strings():
    spec = spec_from_dict(_minimal(data={"path": "my data: v2 #1.jsonl", "format": "text"}))
    assert spec_from_dict(yaml.safe_load(dump_spec(spec))) == spec
    assert isinstance(TrainingSpec.model_json_schema(), dict)


def test_every_spec_key_is_documented():
    """docs/executor.md's reference table names every key of the spec (a new key needs a line there)."""
    from pydantic import BaseModel

    doc = (ROOT / "docs" / "executor.md").read_text()

    def keys(model, prefix=""):
        for name, field in model.model_fields.items():
            sub = field.annotation
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                yield from keys(sub, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}"

    missing = [k for k in keys(TrainingSpec) if f"| `{k}` |" not in doc]
    assert not missing, missing
