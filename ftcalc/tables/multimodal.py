"""Multimodal wrappers (a language model with a vision tower and a projector): the text part's config with
transformers' documented defaults filled in, and the vision tower + projector counted from ``vision_config``.

    from ftcalc.tables.multimodal import split_multimodal
    text_cfg, vision = split_multimodal(cfg)   # vision is None for a text-only config.json

Each count follows the modules transformers builds (the file is named next to each formula, transformers
v5.25); tests/tables/test_multimodal_meta.py checks them against the model built on the meta device.
Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ftcalc.errors import ConfigError

__all__ = ["VisionPart", "split_multimodal", "TEXT_DEFAULTS", "VISION_DEFAULTS"]

# Defaults of the text configs whose published config.json leaves fields out (the class attributes of
# transformers/models/gemma3/configuration_gemma3.py Gemma3TextConfig, v5.25)
TEXT_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {"vocab_size": 262_208, "hidden_size": 2304, "intermediate_size": 9216, "num_hidden_layers": 26,
                    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                    "max_position_embeddings": 131_072, "tie_word_embeddings": True, "sliding_window": 4096},
}
# Vision config defaults (transformers v5.25): siglip/configuration_siglip.py SiglipVisionConfig,
# pixtral/configuration_pixtral.py PixtralVisionConfig, qwen2_5_vl/configuration_qwen2_5_vl.py Qwen2_5_VLVisionConfig
VISION_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_channels": 3,
               "image_size": 224, "patch_size": 16, "vision_use_head": True},
    "mistral3": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_channels": 3,
                 "patch_size": 16},
    "qwen2_5_vl": {"depth": 32, "hidden_size": 3584, "intermediate_size": 3420, "in_channels": 3, "patch_size": 14,
                   "temporal_patch_size": 2, "spatial_merge_size": 2, "out_hidden_size": 3584},
}
# the text model's family for wrappers whose text decoder is an existing family's (same modules)
_TEXT_FAMILY = {"gemma3": "gemma3_text", "qwen2_5_vl": "qwen2"}
_WRAPPER_TIE = {"gemma3": True, "mistral3": True, "qwen2_5_vl": False}


@dataclass(frozen=True)
class VisionPart:
    """The vision tower and projector of a multimodal wrapper: parameter counts and their Linear shapes."""

    family: str  # the wrapper's model_type
    tower_params: int
    projector_params: int
    linears: tuple[tuple[str, int, int, int], ...] = ()  # (name, in, out, count): every Linear, projector's too

    @property
    def params(self) -> int:
        return self.tower_params + self.projector_params

    def lora_params(self, r: int, names: tuple[str, ...] | None = None) -> int:
        """LoRA parameters peft adds on the vision part's Linears: ``names`` None for all-linear (peft adapts
        every Linear but the output layer: 29,802,496 + 8,695,296 = 38,497,792 on Gemma-3-4B at r16, checked on
        the meta device with peft 0.22), else those whose name a target matches."""
        return sum(r * (i + o) * c for n, i, o, c in self.linears if names is None or n in names)


def _int(cfg: dict[str, Any], key: str, default: Any, where: str) -> int:
    v = cfg.get(key, default)
    if isinstance(v, (list, tuple)):
        v = v[0]
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ConfigError(f"{where}: vision_config '{key}' must be a positive integer, got {v!r}")
    return v


def _siglip(v: dict[str, Any], text_hidden: int, where: str) -> VisionPart:
    d = VISION_DEFAULTS["gemma3"]
    h, i = _int(v, "hidden_size", d["hidden_size"], where), _int(v, "intermediate_size", d["intermediate_size"], where)
    layers, p = _int(v, "num_hidden_layers", d["num_hidden_layers"], where), _int(v, "patch_size", d["patch_size"], where)
    c, img = _int(v, "num_channels", d["num_channels"], where), _int(v, "image_size", d["image_size"], where)
    if v.get("vision_use_head", d["vision_use_head"]):
        raise ConfigError(f"{where}: vision_config vision_use_head true: the SigLIP attention-pooling head is not counted")
    # siglip/modeling_siglip.py: SiglipVisionEmbeddings (patch Conv2d with bias, one position embedding per
    # patch), per layer LayerNorm x2 (weight + bias), q/k/v/out_proj with bias, MLP fc1/fc2 with bias, and the
    # post LayerNorm
    emb = c * p * p * h + h + (img // p) ** 2 * h
    layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 4 * h
    tower = emb + layers * layer + 2 * h
    # gemma3/modeling_gemma3.py Gemma3MultiModalProjector: mm_input_projection_weight [h, text_hidden] and
    # mm_soft_emb_norm, an RMSNorm of width h
    proj = h * text_hidden + h
    lin = (("q_proj", h, h, layers), ("k_proj", h, h, layers), ("v_proj", h, h, layers), ("out_proj", h, h, layers),
           ("fc1", h, i, layers), ("fc2", i, h, layers))
    return VisionPart("gemma3", tower, proj, lin)


def _pixtral(cfg: dict[str, Any], v: dict[str, Any], text_hidden: int, where: str) -> VisionPart:
    d = VISION_DEFAULTS["mistral3"]
    h, i = _int(v, "hidden_size", d["hidden_size"], where), _int(v, "intermediate_size", d["intermediate_size"], where)
    layers, p = _int(v, "num_hidden_layers", d["num_hidden_layers"], where), _int(v, "patch_size", d["patch_size"], where)
    c = _int(v, "num_channels", d["num_channels"], where)
    # pixtral/modeling_pixtral.py: patch_conv Conv2d without bias, ln_pre RMSNorm; per layer attention_norm and
    # ffn_norm (RMSNorm), q/k/v/o_proj and gate/up/down_proj, no biases
    tower = c * p * p * h + h + layers * (2 * h + 4 * h * h + 3 * h * i)
    # mistral3/modeling_mistral3.py: norm (RMSNorm h), patch_merger.merging_layer (h * s^2 -> h, no bias),
    # linear_1 (h x feature layers -> text hidden) and linear_2 (text hidden -> text hidden), bias per
    # multimodal_projector_bias
    s = _int(cfg, "spatial_merge_size", 2, where)
    feat = cfg.get("vision_feature_layer", -1)
    n_feat = len(feat) if isinstance(feat, list) else 1
    bias = bool(cfg.get("multimodal_projector_bias", False))
    proj = h + h * s * s * h + (h * n_feat * text_hidden + (text_hidden if bias else 0)) \
        + (text_hidden * text_hidden + (text_hidden if bias else 0))
    lin = tuple((n, a, b, layers) for n, a, b in (("q_proj", h, h), ("k_proj", h, h), ("v_proj", h, h),
                                                  ("o_proj", h, h), ("gate_proj", h, i), ("up_proj", h, i),
                                                  ("down_proj", i, h)))
    lin += (("merging_layer", h * s * s, h, 1), ("linear_1", h * n_feat, text_hidden, 1),
            ("linear_2", text_hidden, text_hidden, 1))
    return VisionPart("mistral3", tower, proj, lin)


def _qwen25_vl(v: dict[str, Any], where: str) -> VisionPart:
    d = VISION_DEFAULTS["qwen2_5_vl"]
    h, i = _int(v, "hidden_size", d["hidden_size"], where), _int(v, "intermediate_size", d["intermediate_size"], where)
    layers, p = _int(v, "depth", d["depth"], where), _int(v, "patch_size", d["patch_size"], where)
    c, t = _int(v, "in_channels", d["in_channels"], where), _int(v, "temporal_patch_size", d["temporal_patch_size"], where)
    m, out = _int(v, "spatial_merge_size", d["spatial_merge_size"], where), _int(v, "out_hidden_size", d["out_hidden_size"], where)
    # qwen2_5_vl/modeling_qwen2_5_vl.py: patch_embed Conv3d without bias; per block norm1/norm2 (RMSNorm),
    # attn.qkv (h -> 3h) and attn.proj with bias, mlp gate/up/down_proj with bias; merger ln_q (RMSNorm) and an
    # MLP (h m^2 -> h m^2 -> out_hidden_size) with biases
    tower = c * t * p * p * h + layers * (2 * h + (3 * h * h + 3 * h) + (h * h + h) + (3 * h * i + 2 * i + h))
    hm = h * m * m
    proj = h + (hm * hm + hm) + (hm * out + out)
    lin = (("qkv", h, 3 * h, layers), ("proj", h, h, layers), ("gate_proj", h, i, layers), ("up_proj", h, i, layers),
           ("down_proj", i, h, layers), ("mlp.0", hm, hm, 1), ("mlp.2", hm, out, 1))
    return VisionPart("qwen2_5_vl", tower, proj, lin)


def split_multimodal(cfg: dict[str, Any], where: str = "config") -> tuple[dict[str, Any], VisionPart | None]:
    """The text model's config (defaults filled in) and the vision part of a multimodal wrapper config.

    A text-only config comes back unchanged with ``None``.

    Raises:
        ConfigError: a wrapper whose vision part ftcalc cannot count (the message names it and the alternative).
    """
    outer = str(cfg.get("model_type") or "")
    if "vision_config" not in cfg:
        return cfg, None
    vision = cfg.get("vision_config") or {}
    if not isinstance(vision, dict):
        raise ConfigError(f"{where}: vision_config must be a JSON object")
    if outer == "mllama":
        raise ConfigError(f"{where}: Llama 3.2 Vision (mllama) interleaves cross-attention layers into the language "
                          "model, which ftcalc does not model; estimate the text-only Llama 3.1 of the same size instead")
    if outer in ("qwen2_5_vl", "qwen2_vl") and "text_config" not in cfg:
        text = {k: v for k, v in cfg.items() if k != "vision_config"}
    else:
        text = cfg.get("text_config")
        if not isinstance(text, dict):
            raise ConfigError(f"{where}: a multimodal config ({outer or '?'}) needs a text_config object")
        text = dict(text)
    text_type = str(text.get("model_type") or "")
    if outer in _TEXT_FAMILY and text_type in ("", outer, f"{outer}_text"):
        text_type = _TEXT_FAMILY[outer]
    for k, val in TEXT_DEFAULTS.get(text_type, {}).items():
        text.setdefault(k, val)
    text["model_type"] = text_type
    # transformers 5 ties the wrapper's head by the outer config's tie_word_embeddings, whose class default is
    # True for Gemma3Config and Mistral3Config and False for Qwen2_5_VLConfig (which also takes a True from an
    # older text_config): configuration_gemma3.py / configuration_mistral3.py / configuration_qwen2_5_vl.py, v5.25
    tie = cfg.get("tie_word_embeddings")
    if tie is None:
        tie = _WRAPPER_TIE.get(outer, False) or (outer == "qwen2_5_vl" and bool(text.get("tie_word_embeddings")))
    text["tie_word_embeddings"] = bool(tie)
    for k in ("torch_dtype", "dtype"):
        if k in cfg and k not in text:
            text[k] = cfg[k]
    text_hidden = text.get("hidden_size")
    if not isinstance(text_hidden, int) or isinstance(text_hidden, bool) or text_hidden <= 0:
        raise ConfigError(f"{where}: text_config has no valid 'hidden_size'")
    if outer == "gemma3":
        part = _siglip(vision, text_hidden, where)
    elif outer == "mistral3":
        part = _pixtral(cfg, vision, text_hidden, where)
    elif outer == "qwen2_5_vl":
        part = _qwen25_vl(vision, where)
    else:
        raise ConfigError(f"{where}: multimodal model_type '{outer}': its vision tower has no count in ftcalc (known: "
                          "gemma3, mistral3, qwen2_5_vl); estimate its text model's own config.json instead")
    return text, part
