"""Pre-quantized checkpoints: the quantization_config parser, the bytes per weight of each format against a hand
count from the format's definition, the refusals, and the LoRA estimate against the same model in bf16."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ftcalc
from ftcalc.cli.main import main
from ftcalc.errors import ConfigError, InvalidArgumentError
from ftcalc.tables.catalog import architecture_from_config, resolve_model
from ftcalc.tables.inventory import inventory
from ftcalc.tables.quantization import module_path, parse_quantization

FIX = Path(__file__).parent / "fixtures" / "configs"
AWQ = FIX / "Qwen--Qwen2.5-72B-Instruct-AWQ.json"
GPTQ = FIX / "TheBloke--Llama-2-7B-Chat-GPTQ.json"
BNB4 = FIX / "unsloth--Llama-3.2-1B-bnb-4bit.json"
FP8 = FIX / "Qwen--Qwen3-8B-FP8.json"
MXFP4 = FIX / "openai--gpt-oss-20b.quantization.json"


def _cfg(p: Path) -> dict:
    return json.loads(p.read_text())


def test_every_fixture_names_its_source() -> None:
    for p in FIX.glob("*.json"):  # a "_source" key, or (the families' fixtures) a .source.txt beside it
        sibling = p.with_suffix(".source.txt")
        source = sibling.read_text() if sibling.is_file() else str(_cfg(p).get("_source", ""))
        assert len(source) > 40 and ("https://" in source or "published config.json" in source), p.name


def test_fixtures_parse_to_their_format() -> None:
    got = {p.name: parse_quantization(_cfg(p)) for p in (AWQ, GPTQ, BNB4, FP8, MXFP4)}
    awq, gptq, bnb, fp8, mx = (got[p.name] for p in (AWQ, GPTQ, BNB4, FP8, MXFP4))
    assert (awq.format, awq.bits, awq.group_size, awq.zero_point) == ("awq", 4, 128, True)
    assert (gptq.format, gptq.bits, gptq.group_size) == ("gptq", 4, 128)
    assert (bnb.format, bnb.quant_type, bnb.double_quant) == ("bnb-4bit", "nf4", True)
    assert (fp8.format, fp8.weight_block_size) == ("fp8", (128, 128))
    assert mx.format == "mxfp4" and "lm_head" in mx.not_converted
    assert parse_quantization({"model_type": "llama"}) is None


# bits per weight of one K x N Linear, counted from each format's definition (not from the module's code)
K, N = 8192, 29696


@pytest.mark.parametrize("qc, bits", [
    # AWQ: 4-bit codes; per group of 128 inputs one fp16 scale and one 4-bit zero per output
    ({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True}, 4 + (16 + 4) / 128),
    ({"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": False}, 4 + 16 / 128),
    # GPTQ: the same, plus an int32 group index per input feature (g_idx)
    ({"quant_method": "gptq", "bits": 4, "group_size": 128}, 4 + (16 + 4) / 128 + 32 / N),
    ({"quant_method": "gptq", "bits": 8, "group_size": 64}, 8 + (16 + 8) / 64 + 32 / N),
    # bitsandbytes LLM.int8: int8 codes and one fp32 absmax per output row
    ({"load_in_8bit": True, "quant_method": "bitsandbytes"}, 8 + 32 / K),
    # fine-grained FP8: e4m3 codes, one fp32 scale per 128 x 128 block
    ({"quant_method": "fp8", "weight_block_size": [128, 128]}, 8 + 32 / (128 * 128)),
    # MXFP4: 32 E2M1 values share one E8M0 byte
    ({"quant_method": "mxfp4"}, 4 + 8 / 32),
    # NF4 without double quantization: one fp32 absmax per 64 values
    ({"load_in_4bit": True, "quant_method": "bitsandbytes", "bnb_4bit_use_double_quant": False}, 4 + 32 / 64),
])
def test_bits_per_weight_match_the_format(qc: dict, bits: float) -> None:
    q = parse_quantization({"quantization_config": qc})
    assert q.bytes_per_weight(K, N) * 8 == pytest.approx(bits, rel=1e-12)


def test_nf4_double_quant_hand_count() -> None:
    q = parse_quantization({"quantization_config": {"load_in_4bit": True, "bnb_4bit_use_double_quant": True,
                                                     "quant_method": "bitsandbytes"}})
    numel = K * N
    blocks = numel // 64  # divides exactly here
    hand = numel / 2 + blocks * 1 + (blocks // 256) * 4 + 256 * 4  # codes, uint8 absmax, fp32 absmax2, code table
    assert q.linear_bytes(K, N) == hand


def test_modules_to_not_convert_follow_transformers_rule() -> None:
    mx = parse_quantization(_cfg(MXFP4))
    assert not mx.converts(module_path("q_proj")) and not mx.converts(module_path("router"))
    assert mx.converts(module_path("experts"))
    # "mlp.gate" (Mixtral's router) must not skip mlp.gate_proj (module boundary)
    q = parse_quantization({"quantization_config": {"quant_method": "awq", "modules_to_not_convert": ["gate"]}})
    assert q.converts(module_path("gate_proj")) and not q.converts("model.layers.0.mlp.gate")


@pytest.mark.parametrize("qc", [{"quant_method": "hqq"}, {"quant_method": "gptq", "bits": 5},
                                {"quant_method": "fp8", "weight_block_size": [128]},
                                {"quant_method": "awq", "modules_to_not_convert": "lm_head"}, "awq"])
def test_bad_quantization_config_is_one_line(qc: object) -> None:
    with pytest.raises(ConfigError) as e:
        parse_quantization({"quantization_config": qc})
    assert "\n" not in str(e.value)


def test_full_fine_tuning_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for p in (AWQ, GPTQ, BNB4, FP8):
        assert main(["estimate", "--model", str(p), "--method", "full"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "already quantized" in err and "--method lora" in err


def test_qlora_on_a_non_bnb_checkpoint_refused_and_mxfp4_lora_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="requantize"):
        ftcalc.estimate(str(AWQ), method="qlora")
    cfg = {**json.loads((FIX / "unsloth--Llama-3.2-1B-bnb-4bit.json").read_text()),
           "quantization_config": _cfg(MXFP4)["quantization_config"]}
    spec = resolve_model(str(BNB4))
    mx_spec = type(spec)(id="mx", arch=architecture_from_config(cfg), config=cfg, origin="file")
    from ftcalc.model.estimator import estimate_options
    from ftcalc.model.options import make_options

    with pytest.raises(InvalidArgumentError, match="Mxfp4Config\\(dequantize=True\\)"):
        estimate_options(mx_spec, make_options(method="lora"))


def _unquantized(p: Path, tmp_path: Path) -> Path:
    cfg = _cfg(p)
    del cfg["quantization_config"]
    out = tmp_path / p.name
    out.write_text(json.dumps(cfg))
    return out


def test_awq_lora_weights_lower_than_bf16_by_the_packing(tmp_path: Path) -> None:
    q = ftcalc.estimate(str(AWQ), method="lora")
    b = ftcalc.estimate(str(_unquantized(AWQ, tmp_path)), method="lora")
    inv = inventory(architecture_from_config(_cfg(AWQ)))
    # every decoder Linear: 2 bytes per weight in bf16, 4 + 20/128 bits under AWQ g128 (hand count above)
    saved = sum(g.weight_params * (2 - (4 + 20 / 128) / 8) for g in inv.linears)
    assert b.breakdown["weights"] - q.breakdown["weights"] == pytest.approx(saved, rel=1e-9)
    assert q.device_used_bytes < b.device_used_bytes - 0.9 * saved
    assert q.quantization.startswith("AWQ") and q.unvalidated and not b.unvalidated
    assert q.trainable_params == b.trainable_params


def test_lora_on_bnb_4bit_checkpoint_is_qlora(tmp_path: Path) -> None:
    pre = ftcalc.estimate(str(BNB4), method="lora")
    base = _unquantized(BNB4, tmp_path)
    fly = ftcalc.estimate(str(base), method="qlora")  # bitsandbytes quantizing the bf16 checkpoint at load
    assert pre.method == "qlora" and pre.device_used_bytes == fly.device_used_bytes
    assert pre.unvalidated == []  # the same Linear4bit storage QLoRA's measurements cover


def test_estimate_json_carries_the_labels(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "--model", str(GPTQ), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["quantization"].startswith("GPTQ") and any("not measured" in u for u in d["unvalidated"])
    assert main(["estimate", "--model", str(FP8)]) == 0
    assert "unvalidated: FP8" in capsys.readouterr().out


def test_missing_local_path_is_not_a_hub_id(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for name in ("./foo/bar", "models/typo", "~/no-such-ftcalc-dir/x"):
        assert main(["estimate", "--model", name]) == 2
        err = capsys.readouterr().err
        assert "no such file or folder" in err and "hub" not in err, name
