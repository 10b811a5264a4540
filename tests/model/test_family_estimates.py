"""Estimates for the families beyond the measured ones: derived from their parts, labelled unvalidated, never refused.

Each property below follows from the module structure the ledger reads (catalog.Architecture): the routed layers'
activations use the experts' width, dense layers before the MoE use the dense width, MLA attention sees the expanded
per-head q/k/v (not num_key_value_heads) and caches the latent, a plain GELU MLP saves less than a gated one of the same width. No torch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ftcalc
from ftcalc.cli.main import main
from ftcalc.model.memory import activation_terms_per_token, kv_cache_bytes
from ftcalc.model.options import TrainingOptions
from ftcalc.tables.catalog import VALIDATED_MODEL_TYPES, architecture_from_config
from ftcalc.tables.inventory import inventory

FIXTURES = Path(__file__).resolve().parents[1] / "tables" / "fixtures" / "configs"
_SMALL = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=1024, max_position_embeddings=4096)
CONFIGS = {
    "olmo2": dict(model_type="olmo2", **_SMALL),
    "granite": dict(model_type="granite", **_SMALL),
    "cohere": dict(model_type="cohere", **_SMALL),
    "starcoder2": dict(model_type="starcoder2", **_SMALL),
    "qwen3_moe": dict(model_type="qwen3_moe", num_experts=8, num_experts_per_tok=2, moe_intermediate_size=128,
                      **_SMALL),
    "gpt_oss": dict(model_type="gpt_oss", num_local_experts=8, num_experts_per_tok=2, head_dim=64, **_SMALL),
    "deepseek_v2": dict(model_type="deepseek_v2", n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=128,
                        n_shared_experts=2, first_k_dense_replace=1, kv_lora_rank=64, q_lora_rank=None,
                        qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32, **_SMALL),
    "deepseek_v3": dict(model_type="deepseek_v3", n_routed_experts=8, num_experts_per_tok=2, moe_intermediate_size=128,
                        n_shared_experts=1, first_k_dense_replace=1, kv_lora_rank=64, q_lora_rank=96,
                        qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32, **_SMALL),
    "llama4_text": dict(model_type="llama4_text", num_local_experts=16, num_experts_per_tok=1,
                        intermediate_size_mlp=768, interleave_moe_layer_step=2, head_dim=64, **_SMALL),
}
for p in sorted(FIXTURES.glob("*.json")):  # the published configs of the new families (the folder also holds
    if p.with_suffix(".source.txt").is_file():  # checkpoint-format fixtures of measured families)
        CONFIGS[f"published:{p.stem}"] = json.loads(p.read_text())


def _write(tmp_path: Path, cfg: dict) -> str:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return str(path)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_every_new_family_gets_an_estimate_labelled_unvalidated(name: str, tmp_path: Path) -> None:
    cfg = CONFIGS[name]
    est = ftcalc.estimate(_write(tmp_path, cfg), method="lora", seq_len=1024, lora_dropout=0.0, gpu="h200")
    assert est.peak_allocated_bytes > 0 and est.tokens_per_second
    assert cfg["model_type"] not in VALIDATED_MODEL_TYPES
    assert est.unvalidated and cfg["model_type"] in est.unvalidated[0]
    assert "fitted gap" in est.unvalidated[0]  # no allocator simulation for these types


def test_measured_family_has_no_unvalidated_parts() -> None:
    assert ftcalc.estimate("8b", method="lora", gpu="h100").unvalidated == []


@pytest.mark.parametrize("model_type,part", [("deepseek_v2", "MLA"), ("deepseek_v3", "MLA"),
                                             ("gpt_oss", "attention sinks"), ("gpt_oss", "MXFP4"),
                                             ("starcoder2", "layernorm"), ("cohere", "parallel"),
                                             ("qwen3_moe", "MoE block"), ("llama4_text", "dense layers")])
def test_the_parts_the_mechanism_does_not_cover_are_named(model_type: str, part: str) -> None:
    parts = architecture_from_config(CONFIGS[model_type]).unvalidated_parts
    assert any(part in p for p in parts), parts


def test_cli_prints_the_unvalidated_parts(tmp_path: Path, capsys) -> None:
    assert main(["estimate", "--model", _write(tmp_path, CONFIGS["deepseek_v2"]), "--lora-dropout", "0"]) == 0
    out = capsys.readouterr().out
    assert "unvalidated" in out and "MLA" in out
    assert main(["estimate", "--model", "8b"]) == 0
    assert "unvalidated" not in capsys.readouterr().out


def _terms(cfg: dict, method: str = "lora") -> dict[str, float]:
    arch = architecture_from_config(cfg)
    opts = TrainingOptions(method=method, seq_len=1024, lora_dropout=0.0)
    return activation_terms_per_token(arch, opts, inventory(arch))


def test_routed_layers_use_the_expert_width_not_the_dense_width() -> None:
    base = CONFIGS["qwen3_moe"]  # every layer routed: intermediate_size (the dense width) is in no layer
    assert _terms(base)["mlp"] == _terms({**base, "intermediate_size": 4 * base["intermediate_size"]})["mlp"]
    assert _terms(base)["mlp"] < _terms({**base, "moe_intermediate_size": 2 * base["moe_intermediate_size"]})["mlp"]
    # with a dense layer (mlp_only_layers) the dense width enters, for that layer's share
    dense1 = {**base, "mlp_only_layers": [0]}
    assert _terms(dense1)["mlp"] < _terms({**dense1, "intermediate_size": 4 * base["intermediate_size"]})["mlp"]


def test_deepseek_dense_layers_before_the_moe_change_the_mlp_share() -> None:
    base = CONFIGS["deepseek_v2"]
    assert _terms(base)["mlp"] != _terms({**base, "first_k_dense_replace": 3})["mlp"]


def test_mla_attention_and_cache_follow_the_expanded_heads_not_kv_heads() -> None:
    base = CONFIGS["deepseek_v2"]
    other_kv = {**base, "num_key_value_heads": 1}
    assert _terms(base)["attention"] == _terms(other_kv)["attention"]
    a, b = architecture_from_config(base), architecture_from_config(other_kv)
    assert kv_cache_bytes(a, 1, 1024) == kv_cache_bytes(b, 1, 1024)
    # the cache holds the latent (kv_lora_rank + rope dims), not the expanded heads
    wider_v = architecture_from_config({**base, "v_head_dim": 2 * base["v_head_dim"]})
    assert kv_cache_bytes(wider_v, 1, 1024) == kv_cache_bytes(a, 1, 1024)
    wider_latent = architecture_from_config({**base, "kv_lora_rank": 2 * base["kv_lora_rank"]})
    assert kv_cache_bytes(wider_latent, 1, 1024) > kv_cache_bytes(a, 1, 1024)
    assert _terms({**base, "v_head_dim": 2 * base["v_head_dim"]})["attention"] > _terms(base)["attention"]


def test_plain_gelu_mlp_saves_less_than_a_gated_one_of_the_same_width() -> None:
    plain = _terms(CONFIGS["starcoder2"])["mlp"]
    gated = _terms({**CONFIGS["starcoder2"], "model_type": "granite"})["mlp"]
    assert plain < gated
