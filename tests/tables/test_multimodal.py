"""Multimodal wrappers: the text part with transformers' defaults, the vision tower + projector counted and labelled
(never the language model alone, silently), and the counts against the models transformers builds on the meta
device (skipped without the [train] extra)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ftcalc
from ftcalc.errors import ConfigError
from ftcalc.tables.catalog import architecture_from_config
from ftcalc.tables.inventory import inventory
from ftcalc.tables.multimodal import split_multimodal

FIX = Path(__file__).parent / "fixtures" / "configs"
GEMMA3_PUBLISHED = FIX / "google--gemma-3-4b-pt.published.json"

# small wrappers of each family (shapes chosen to be distinct, not published models): the counts are formulas
# of the shapes, checked against transformers below
MISTRAL3 = {"model_type": "mistral3",
            "text_config": {"model_type": "mistral", "hidden_size": 256, "intermediate_size": 512,
                            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                            "head_dim": 64, "vocab_size": 1000, "tie_word_embeddings": False},
            "vision_config": {"model_type": "pixtral", "hidden_size": 128, "intermediate_size": 256,
                              "num_hidden_layers": 3, "num_attention_heads": 4, "patch_size": 14, "image_size": 224,
                              "head_dim": 32}}
QWEN25_VL = {"model_type": "qwen2_5_vl", "hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": False,
             "bos_token_id": 0, "eos_token_id": 1,
             "vision_config": {"depth": 3, "hidden_size": 128, "intermediate_size": 200, "num_heads": 4,
                               "out_hidden_size": 256, "patch_size": 14, "in_channels": 3}}


def _published_gemma3() -> dict:
    return json.loads(GEMMA3_PUBLISHED.read_text())


def test_published_gemma3_text_config_takes_transformers_defaults() -> None:
    cfg = _published_gemma3()
    assert "num_attention_heads" not in cfg["text_config"]
    arch = architecture_from_config(cfg)
    assert (arch.model_type, arch.num_heads, arch.num_kv_heads, arch.head_dim, arch.vocab_size) == (
        "gemma3_text", 8, 4, 256, 262_208)
    assert arch.vision is not None and arch.vision.family == "gemma3"


def test_vision_tower_counted_frozen_and_labelled(tmp_path: Path) -> None:
    est = ftcalc.estimate(str(GEMMA3_PUBLISHED), method="lora")
    cfg = _published_gemma3()
    arch = architecture_from_config(cfg)
    text_only = tmp_path / "text.json"
    text, _ = split_multimodal(cfg)
    text_only.write_text(json.dumps(text))
    lm = ftcalc.estimate(str(text_only), method="lora")
    assert est.total_params == lm.total_params + arch.vision.params
    assert est.breakdown["weights"] - lm.breakdown["weights"] == 2 * arch.vision.params  # bf16, no gradient
    assert any("vision tower" in u and "image tokens not modelled" in u for u in est.unvalidated)
    assert not lm.unvalidated
    full = ftcalc.estimate(str(GEMMA3_PUBLISHED), method="full")
    full_lm = ftcalc.estimate(str(text_only), method="full")
    assert full.trainable_params == full_lm.trainable_params  # frozen: no gradients, no optimizer state


def test_lora_targets_hit_the_vision_linears_by_name() -> None:
    arch = architecture_from_config(_published_gemma3())
    a = ftcalc.estimate(str(GEMMA3_PUBLISHED), method="lora", lora_targets="all-linear")
    o = ftcalc.estimate(str(GEMMA3_PUBLISHED), method="lora", lora_targets="o_proj")  # SigLIP calls it out_proj
    q = ftcalc.estimate(str(GEMMA3_PUBLISHED), method="lora", lora_targets="q_proj")
    h = arch.vision.linears[0][1]
    layers = arch.vision.linears[0][3]
    # the decoder's q_proj and o_proj have the same LoRA size (h -> q, q -> h); only SigLIP's q_proj differs
    assert q.trainable_params - o.trainable_params == 16 * 2 * h * layers
    assert a.trainable_params > q.trainable_params


def test_mllama_and_unknown_wrappers_refused_with_the_alternative() -> None:
    with pytest.raises(ConfigError, match="cross-attention.*Llama 3.1"):
        split_multimodal({"model_type": "mllama", "text_config": {"hidden_size": 8}, "vision_config": {}})
    with pytest.raises(ConfigError, match="no count in ftcalc"):
        split_multimodal({"model_type": "llava", "text_config": {"hidden_size": 8}, "vision_config": {}})


# ---- against transformers on the meta device


def _meta_counts(cfg: dict) -> tuple[int, int, int]:
    """(vision + projector params, language model + head params, peft all-linear LoRA params at r16)."""
    pytest.importorskip("torch")
    pytest.importorskip("accelerate")
    pytest.importorskip("transformers")
    peft = pytest.importorskip("peft")
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForImageTextToText
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    c = {k: v for k, v in cfg.items() if not k.startswith("_")}
    hf = AutoConfig.for_model(c.pop("model_type"), **c)
    with init_empty_weights():
        model = AutoModelForImageTextToText.from_config(hf)
    model.tie_weights()
    vision = lm = 0
    seen: set[int] = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        if "language_model" in name or name.startswith("lm_head"):
            lm += p.numel()
        else:
            vision += p.numel()
    pm = peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    trainable = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    return vision, lm, trainable


@pytest.mark.parametrize("cfg", [pytest.param(None, id="gemma3-4b-published"), pytest.param(MISTRAL3, id="mistral3"),
                                 pytest.param(QWEN25_VL, id="qwen2_5_vl")])
def test_counts_match_meta_device(cfg: dict | None) -> None:
    cfg = cfg or _published_gemma3()
    vision, lm, lora = _meta_counts(cfg)
    arch = architecture_from_config(cfg)
    assert arch.vision.params == vision
    assert inventory(arch).total_params == lm  # the text part is the family it maps to
    from ftcalc.model.memory import lora_params
    from ftcalc.model.options import make_options

    assert lora_params(inventory(arch), make_options(method="lora", lora_r=16)) + arch.vision.lora_params(16) == lora


def test_inventory_command_names_the_vision_part(capsys: pytest.CaptureFixture[str]) -> None:
    from ftcalc.cli.main import main

    assert main(["inventory", "--model", str(GEMMA3_PUBLISHED)]) == 0
    out = capsys.readouterr().out
    params = architecture_from_config(_published_gemma3()).vision.params
    assert f"vision tower + projector (gemma3): {params:,} parameters more" in out
