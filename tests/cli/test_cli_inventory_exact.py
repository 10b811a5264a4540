"""`ftcalc inventory --exact` for a model_type the analytic counter does not know: the refusal of the plain command
points to it, and it builds the model on the meta device (needs the [train] extra)."""

from __future__ import annotations

import json

import pytest

from ftcalc.cli.main import main

# PhiMoE (transformers/models/phimoe): a family with no analytic inventory in ftcalc; small sizes for speed
PHIMOE = {"model_type": "phimoe", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128, "num_local_experts": 4,
          "num_experts_per_tok": 2}


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_unknown_model_type_refusal_names_the_exact_command(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(PHIMOE))
    code, _, err = _run(capsys, "inventory", "--model", str(path))
    assert code == 2
    assert "phimoe" in err and "ftcalc inventory --exact" in err and len(err.strip().splitlines()) == 1


def test_exact_counts_an_unknown_model_type(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    pytest.importorskip("accelerate")
    transformers = pytest.importorskip("transformers")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(PHIMOE))
    code, out, _ = _run(capsys, "inventory", "--model", str(path), "--exact", "--json")
    assert code == 0
    d = json.loads(out)
    with torch.device("meta"):
        cfg = dict(PHIMOE)
        model = transformers.AutoModelForCausalLM.from_config(
            transformers.AutoConfig.for_model(cfg.pop("model_type"), **cfg))
    assert d["total_params"] == sum(p.numel() for p in model.parameters())
    assert d["source"] == "meta-device"


def test_exact_refuses_a_type_transformers_cannot_build_in_one_line(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("accelerate")
    pytest.importorskip("transformers")
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"model_type": "no_such_family", "hidden_size": 8}))
    code, _, err = _run(capsys, "inventory", "--model", str(path), "--exact")
    assert code == 2
    assert "no_such_family" in err and len(err.strip().splitlines()) == 1
