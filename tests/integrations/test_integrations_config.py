"""``ftcalc estimate --from FILE``: trainer configs (axolotl, LLaMA-Factory, TRL SFTConfig, TrainingArguments).

Each fixture in tests/integrations/fixtures/trainer_configs/ is written in the format its tool documents; the expected
options are read from the fixture itself (not copied from ftcalc's output), and the estimate from the file must
equal ``ftcalc estimate`` with the equivalent flags.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from ftcalc.cli.main import main
from ftcalc.errors import ConfigError, FtcalcError
from ftcalc.integrations.trainer_config import detect_format, read_trainer_config

FIX = Path(__file__).parent / "fixtures" / "trainer_configs"
AXOLOTL = FIX / "axolotl_qlora.yml"
LLAMAFACTORY = FIX / "llamafactory_lora_sft.yaml"
SFT = FIX / "trl_sft_config.json"
LORA = FIX / "peft_lora_config.json"
FULL = FIX / "training_args_full.json"


def _raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _json_out(capsys: pytest.CaptureFixture[str], argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _same_estimate(capsys: pytest.CaptureFixture[str], from_argv: list[str], flag_argv: list[str]) -> dict:
    a = _json_out(capsys, ["estimate", *from_argv, "--json"])
    b = _json_out(capsys, ["estimate", *flag_argv, "--json"])
    for k in ("model", "method", "seq_len", "batch_size", "optimizer", "precision", "gradient_checkpointing",
              "attention", "loss", "lora_r", "peak_allocated_bytes", "device_used_bytes", "breakdown"):
        assert a[k] == b[k], k
    return a


def test_formats_detected_from_keys() -> None:
    assert detect_format(_raw(AXOLOTL)) == "axolotl"
    assert detect_format(_raw(LLAMAFACTORY)) == "llama-factory"
    assert detect_format(json.loads(SFT.read_text())) == "trl-sft"
    assert detect_format(json.loads(FULL.read_text())) == "transformers"
    assert detect_format(json.loads(LORA.read_text())) == "peft-lora"
    assert detect_format({"quant_method": "bitsandbytes", "load_in_4bit": True}) == "bitsandbytes"


def test_axolotl_qlora_maps_every_key(capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw(AXOLOTL)
    tc = read_trainer_config(AXOLOTL)
    o = tc.make_options()
    assert tc.tool == "axolotl" and tc.model == raw["base_model"]
    assert o.method == "qlora" and raw["adapter"] == "qlora" and raw["load_in_4bit"] is True
    assert o.seq_len == raw["sequence_len"]
    assert o.batch_size == raw["micro_batch_size"]
    assert o.gradient_accumulation_steps == raw["gradient_accumulation_steps"]
    assert o.checkpointing is raw["gradient_checkpointing"]
    assert o.optimizer == raw["optimizer"]
    assert (o.lora_r, o.lora_alpha, o.lora_dropout) == (raw["lora_r"], raw["lora_alpha"], raw["lora_dropout"])
    assert raw["lora_target_linear"] is True and o.lora_targets == ("all-linear",)
    assert raw["flash_attention"] is True and o.attention == "flash_attention_2"
    assert raw["liger_fused_linear_cross_entropy"] is True and o.loss == "fused"
    assert raw["bf16"] == "auto" and o.precision == "bf16-true"
    text = "\n".join(tc.not_modelled)
    assert raw["gradient_checkpointing_kwargs"]["use_reentrant"] is True and "use_reentrant=true" in text
    for k in ("liger_rms_norm", "liger_glu_activation"):
        assert raw[k] and k in text
    assert tc.unknown == ["my_custom_key"]
    _same_estimate(capsys, ["--from", str(AXOLOTL), "--gpu", "h100"],
                   ["--model", raw["base_model"], "--method", "qlora", "--seq-len", str(raw["sequence_len"]),
                    "--batch-size", str(raw["micro_batch_size"]), "--gradient-accumulation-steps",
                    str(raw["gradient_accumulation_steps"]), "--gradient-checkpointing", "--optimizer",
                    raw["optimizer"], "--lora-r", str(raw["lora_r"]), "--lora-alpha", str(raw["lora_alpha"]),
                    "--lora-dropout", str(raw["lora_dropout"]), "--attention", "flash_attention_2", "--loss", "fused",
                    "--gpu", "h100"])


def test_llamafactory_lora_sft(capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import TrainingArguments

    raw = _raw(LLAMAFACTORY)
    tc = read_trainer_config(LLAMAFACTORY)
    o = tc.make_options()
    assert tc.tool == "llama-factory" and tc.model == raw["model_name_or_path"]
    assert o.method == raw["finetuning_type"] == "lora"
    assert o.seq_len == raw["cutoff_len"]
    assert o.batch_size == raw["per_device_train_batch_size"]
    assert o.gradient_accumulation_steps == raw["gradient_accumulation_steps"]
    assert o.lora_r == raw["lora_rank"] and "lora_alpha" not in raw and o.lora_alpha == 2 * raw["lora_rank"]
    assert o.lora_targets == tuple(raw["lora_target"].split(","))
    assert o.lora_dropout == 0.0 and "lora_dropout" not in raw
    assert o.checkpointing  # LLaMA-Factory checkpoints unless disable_gradient_checkpointing
    assert raw["flash_attn"] == "sdpa" and o.attention == "sdpa"
    # no optim in the file: transformers' own TrainingArguments default, read from the installed library
    default_optim = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}["optim"]
    assert "optim" not in raw and o.optimizer == str(getattr(default_optim, "value", default_optim))
    assert any(n.startswith("deepspeed=") for n in tc.not_modelled) and raw["deepspeed"]
    assert any("use_reentrant_gc" in n for n in tc.not_modelled)
    assert tc.unknown == []
    _same_estimate(capsys, ["--from", str(LLAMAFACTORY), "--gpu", "a10g"],
                   ["--model", raw["model_name_or_path"], "--method", "lora", "--seq-len", str(raw["cutoff_len"]),
                    "--batch-size", str(raw["per_device_train_batch_size"]), "--gradient-accumulation-steps",
                    str(raw["gradient_accumulation_steps"]), "--optimizer", o.optimizer, "--lora-r",
                    str(raw["lora_rank"]), "--lora-alpha", str(2 * raw["lora_rank"]), "--lora-dropout", "0",
                    "--lora-targets", raw["lora_target"], "--attention", "sdpa", "--gpu", "a10g"])


def test_sft_config_with_its_lora_config(capsys: pytest.CaptureFixture[str]) -> None:
    raw, lora = json.loads(SFT.read_text()), json.loads(LORA.read_text())
    tc = read_trainer_config([SFT, LORA])
    o = tc.make_options()
    assert tc.tool == "trl-sft" and tc.model == lora["base_model_name_or_path"]
    assert o.method == "lora" and lora["peft_type"] == "LORA"
    assert o.seq_len == raw["max_length"]
    assert o.batch_size == raw["per_device_train_batch_size"]
    assert o.gradient_accumulation_steps == raw["gradient_accumulation_steps"]
    assert o.checkpointing is raw["gradient_checkpointing"] is True
    assert o.optimizer == raw["optim"]  # adamw_8bit: the same name in transformers and ftcalc
    assert o.attention == raw["model_init_kwargs"]["attn_implementation"]
    assert raw["model_init_kwargs"]["dtype"] == "bfloat16" and raw["bf16"] and o.precision == "bf16-true"
    assert (o.lora_r, o.lora_alpha, o.lora_dropout) == (lora["r"], lora["lora_alpha"], lora["lora_dropout"])
    assert set(o.lora_targets) == set(lora["target_modules"])
    assert any(n.startswith("max_grad_norm=") for n in tc.not_modelled) and raw["max_grad_norm"] > 0
    assert tc.unknown == []
    out = _same_estimate(capsys, ["--from", str(SFT), "--from", str(LORA)],
                         ["--model", lora["base_model_name_or_path"], "--seq-len", str(raw["max_length"]),
                          "--batch-size", str(raw["per_device_train_batch_size"]), "--gradient-accumulation-steps",
                          str(raw["gradient_accumulation_steps"]), "--gradient-checkpointing", "--optimizer",
                          raw["optim"], "--lora-r", str(lora["r"]), "--lora-alpha", str(lora["lora_alpha"]),
                          "--lora-dropout", str(lora["lora_dropout"]), "--lora-targets",
                          ",".join(lora["target_modules"]), "--attention", "sdpa"])
    # the --json output names what the file holds and ftcalc does not model
    assert out["from_config"]["not_modelled"] == tc.not_modelled and out["from_config"]["tool"] == "trl-sft"


def test_training_arguments_full_fine_tuning(capsys: pytest.CaptureFixture[str]) -> None:
    raw = json.loads(FULL.read_text())
    tc = read_trainer_config(FULL)
    o = tc.make_options()
    assert tc.tool == "transformers" and tc.model is None
    assert o.method == "full"  # no LoraConfig beside the dump
    assert o.batch_size == raw["per_device_train_batch_size"]
    assert o.gradient_accumulation_steps == raw["gradient_accumulation_steps"]
    assert o.checkpointing is raw["gradient_checkpointing"] is True
    assert o.optimizer == raw["optim"]
    assert tc.unknown == []
    assert any("dtype" in a for a in tc.assumptions)  # a TrainingArguments dump does not hold the model dtype
    _same_estimate(capsys, ["--from", str(FULL), "--model", "llama3.2-1b", "--gpu", "h100"],
                   ["--model", "llama3.2-1b", "--method", "full", "--batch-size", "1", "--gradient-accumulation-steps",
                    str(raw["gradient_accumulation_steps"]), "--gradient-checkpointing", "--optimizer", raw["optim"],
                    "--gpu", "h100"])


def test_typed_flags_override_the_file_even_at_their_default(capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw(AXOLOTL)
    assert raw["sequence_len"] != 2048 and raw["micro_batch_size"] != 1
    # 2048 and 1 are the flags' defaults: typed, they still win over the file
    out = _json_out(capsys, ["estimate", "--from", str(AXOLOTL), "--seq-len", "2048", "--batch-size", "1", "--json"])
    assert (out["seq_len"], out["batch_size"]) == (2048, 1)
    out = _json_out(capsys, ["estimate", "--from", str(AXOLOTL), "--json"])
    assert (out["seq_len"], out["batch_size"]) == (raw["sequence_len"], raw["micro_batch_size"])
    out = _json_out(capsys, ["estimate", "--from", str(AXOLOTL), "--method", "lora", "--json"])
    assert out["method"] == "lora"
    assert raw["gradient_checkpointing"] is True
    out = _json_out(capsys, ["estimate", "--from", str(AXOLOTL), "--no-gradient-checkpointing", "--json"])
    assert out["gradient_checkpointing"] is False


def test_text_output_names_unmodelled_and_unknown_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "--from", str(AXOLOTL)]) == 0
    out = capsys.readouterr().out
    assert "not modelled: use_reentrant=true" in out and "unknown keys (not read): my_custom_key" in out


def test_fit_from_file(capsys: pytest.CaptureFixture[str]) -> None:
    out = _json_out(capsys, ["fit", "--from", str(LLAMAFACTORY), "--gpu", "a10g", "--maximize", "batch-size",
                             "--json"])
    ref = _json_out(capsys, ["fit", "--model", "llama3-8b", "--seq-len", "2048", "--lora-r", "8", "--lora-alpha",
                             "16", "--lora-dropout", "0", "--lora-targets", "q_proj,v_proj", "--gradient-accumulation"
                             "-steps", "8", "--optimizer", "adamw_torch_fused", "--attention", "sdpa", "--gpu", "a10g",
                             "--maximize", "batch-size", "--json"])
    assert out["best"] == ref["best"]


@pytest.mark.parametrize("text, name, needle", [
    ("base_model: x\nsequence_len: [1, 2\n", "bad.yml", "malformed YAML"),
    ("!!python/object/apply:os.system ['true']\n", "tag.yml", "malformed YAML"),
    ('{"a": 1,', "bad.json", "malformed JSON"),
    ("- a\n- b\n", "list.yml", "expected a mapping"),
    ("foo: 1\nbar: 2\n", "other.yml", "unknown config format"),
    ("output_dir: out\nper_device_train_batch_size: 2\n", "ta.yml", "names no model"),
    ("base_model: llama3-8b\nsequence_len: 512\nadapter: prefix\n", "adapter.yml", "adapter='prefix'"),
    ("sequence_len: 512\nmicro_batch_size: 2\nadapter: lora\noutput_dir: o\n", "axo.yml", "axolotl config names no model"),
])
def test_bad_files_are_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, name: str,
                                       needle: str) -> None:
    p = tmp_path / name
    p.write_text(text)
    assert main(["estimate", "--from", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and err.startswith("ftcalc: error:")


def test_missing_file_and_only_side_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "--from", str(tmp_path / "nope.yml")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["estimate", "--from", str(LORA)]) == 2
    assert "only adapter/quantization configs" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        read_trainer_config([AXOLOTL, LLAMAFACTORY])
    assert main(["estimate"]) == 2 and "--model is required" in capsys.readouterr().err


def test_bitsandbytes_side_file_makes_qlora(tmp_path: Path) -> None:
    bnb = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "fp4",
           "bnb_4bit_use_double_quant": False, "bnb_4bit_compute_dtype": "bfloat16"}
    p = tmp_path / "bnb.json"
    p.write_text(json.dumps(bnb))
    o = read_trainer_config([SFT, LORA, p]).make_options()
    assert (o.method, o.quant_type, o.double_quant) == ("qlora", bnb["bnb_4bit_quant_type"],
                                                        bnb["bnb_4bit_use_double_quant"])


def test_unmodelled_optimizer_is_named(tmp_path: Path) -> None:
    p = tmp_path / "ta.json"
    p.write_text(json.dumps({"output_dir": "o", "per_device_train_batch_size": 1, "optim": "lion_32bit"}))
    tc = read_trainer_config(p)
    assert tc.make_options().optimizer == "adamw_torch"
    assert any(n.startswith("optim=lion_32bit") for n in tc.not_modelled)


def test_errors_are_ftcalc_errors() -> None:
    with pytest.raises(FtcalcError):
        read_trainer_config(FIX / "missing.yml")


def test_recommend_from_file(capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw(AXOLOTL)
    out = _json_out(capsys, ["recommend", "--from", str(AXOLOTL), "--dataset-tokens", "20M", "--top", "2", "--json"])
    gbs = raw["micro_batch_size"] * raw["gradient_accumulation_steps"]
    ref = _json_out(capsys, ["recommend", "--model", raw["base_model"], "--method", "qlora", "--seq-len",
                             str(raw["sequence_len"]), "--optimizer", raw["optimizer"], "--lora-r", str(raw["lora_r"]),
                             "--global-batch", str(gbs), "--dataset-tokens", "20M", "--top", "2", "--json"])
    assert out["plans"] and out["plans"] == ref["plans"]


def test_a_dump_without_sequence_length_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    from ftcalc.model.options import TrainingOptions

    tc = read_trainer_config(FULL)
    assert tc.make_options().seq_len == TrainingOptions().seq_len
    assert any("no sequence length" in a for a in tc.assumptions)
    out = _json_out(capsys, ["estimate", "--from", str(FULL), "--model", "llama3.2-1b", "--seq-len", "4096", "--json"])
    assert out["seq_len"] == 4096


def test_reading_a_config_imports_no_heavy_library() -> None:
    import subprocess
    import sys

    code = ("import sys, ftcalc.cli.main; ftcalc.cli.main.build_parser(); import ftcalc.integrations as i; "
            f"i.read_trainer_config([r'{SFT}', r'{LORA}']); "
            "print(','.join(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_plan_from_file(capsys: pytest.CaptureFixture[str]) -> None:
    raw = _raw(LLAMAFACTORY)
    alpaca = Path(__file__).resolve().parents[2] / "data" / "samples" / "alpaca_sample.jsonl"
    base = ["plan", "--from", str(LLAMAFACTORY), "--model", "tiny-llama", "--dataset", str(alpaca), "--device", "cpu",
            "--seq-len", "256", "--json"]
    spec = _json_out(capsys, base)
    assert spec["method"] == raw["finetuning_type"] and spec["lora"]["lora_r"] == raw["lora_rank"]
    assert spec["lora"]["lora_targets"] == raw["lora_target"].split(",")
    assert spec["micro_batch_size"] == raw["per_device_train_batch_size"]
    assert spec["gradient_accumulation_steps"] == raw["gradient_accumulation_steps"]
    assert spec["attention"] == raw["flash_attn"] and spec["sequence_len"] == 256  # typed --seq-len wins
    assert _json_out(capsys, [*base, "--batch-size", "1"])["micro_batch_size"] == 1


def test_a_real_bitsandbytes_config_dict_maps_to_qlora() -> None:
    """What a 4-bit model carries as ``model.config.quantization_config`` (the callback reads it)."""
    transformers = pytest.importorskip("transformers")
    from ftcalc.integrations.trainer_config import map_config

    q = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_use_double_quant=False)
    tc = map_config(q.to_dict())
    assert tc.tool == "bitsandbytes" and tc.options == {"method": "qlora", "quant_type": q.bnb_4bit_quant_type,
                                                          "double_quant": q.bnb_4bit_use_double_quant}
    assert tc.not_modelled == [] and tc.unknown == []
