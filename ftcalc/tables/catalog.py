"""Model architectures: the catalog in data/models/, aliases, local config.json files, hub ids.

    ftcalc models                       # list the catalog
    ftcalc estimate --model 8b ...      # alias -> meta-llama/Llama-3.1-8B
    ftcalc estimate --model ./my-model/config.json ...

Each catalog file ``data/models/<org>--<name>.json`` holds the fields of the model's published
config.json under ``config``, with ``source`` (the URL it was read from) and ``date``. ``resolve_model``
turns any of the accepted spellings into a :class:`ModelSpec` whose :class:`Architecture` is the
normalized view the inventory and memory model use (no torch needed).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from ftcalc._paths import data_dir
from ftcalc.errors import ConfigError, MissingDependencyError, UnknownModelError
from ftcalc.tables.multimodal import VisionPart, split_multimodal
from ftcalc.tables.quantization import QuantScheme, parse_quantization

__all__ = ["Architecture", "ModelSpec", "resolve_model", "list_models", "architecture_from_config"]

# model_type -> family facts that config.json does not spell out. Each is a fact about the
# transformers implementation (transformers/models/<type>/modeling_<type>.py, v5.x), checked by
# tests/tables/test_inventory_meta.py against the real modules on the meta device.
_FAMILIES: dict[str, dict[str, Any]] = {
    # norms_per_layer: RMSNorm weights of width hidden in each decoder layer
    # qkv_bias: q/k/v projections carry a bias whatever config says (Qwen2: modeling_qwen2.py)
    # qk_norm: per-head RMSNorm on q and k (Qwen3, Gemma 3)
    # fused_qkv / fused_gate_up: one qkv_proj / gate_up_proj Linear (Phi-3: modeling_phi3.py)
    # default_attention: what transformers selects with no attn_implementation given (checked on
    #   transformers 5.23: Gemma 2 falls back to eager because SDPA lacks logit soft-capping)
    "llama": dict(norms_per_layer=2, default_attention="sdpa"),
    "mistral": dict(norms_per_layer=2, default_attention="sdpa"),
    "mixtral": dict(norms_per_layer=2, default_attention="sdpa"),
    "qwen2": dict(norms_per_layer=2, qkv_bias=True, default_attention="sdpa"),
    "qwen3": dict(norms_per_layer=2, qk_norm=True, default_attention="sdpa"),
    "gemma": dict(norms_per_layer=2, default_attention="sdpa"),
    "gemma2": dict(norms_per_layer=4, default_attention="eager"),
    "gemma3_text": dict(norms_per_layer=4, qk_norm=True, default_attention="sdpa"),
    "phi3": dict(norms_per_layer=2, fused_qkv=True, fused_gate_up=True, default_attention="sdpa"),
}


@dataclass(frozen=True)
class Architecture:
    """The shape facts of a decoder-only transformer, normalized across families."""

    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    tie_word_embeddings: bool
    norms_per_layer: int = 2
    qkv_bias: bool = False  # bias on q/k/v
    o_bias: bool = False  # bias on o_proj
    mlp_bias: bool = False  # bias on gate/up/down
    qk_norm: bool = False
    fused_qkv: bool = False
    fused_gate_up: bool = False
    num_experts: int = 0  # 0: dense MLP
    experts_per_token: int = 0
    default_attention: str = "sdpa"
    sliding_window: int | None = None
    final_logit_softcapping: float | None = None
    torch_dtype: str = "bfloat16"
    quantization: QuantScheme | None = None  # a pre-quantized checkpoint (tables/quantization.py)
    vision: VisionPart | None = None  # a multimodal wrapper's vision tower + projector (tables/multimodal.py)

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: its id, where it came from, its raw config and the normalized architecture."""

    id: str
    arch: Architecture
    config: dict[str, Any] = field(repr=False)
    aliases: tuple[str, ...] = ()
    source: str = ""
    origin: str = "catalog"  # catalog | file | hub

    @property
    def short_name(self) -> str:
        return self.aliases[0] if self.aliases else self.id


def _need(cfg: dict[str, Any], key: str, where: str) -> Any:
    if key not in cfg or cfg[key] is None:
        raise ConfigError(f"{where}: config has no '{key}' (a decoder-only causal LM config.json needs it)")
    return cfg[key]


# Upper bounds on config.json sizes: a value above these is a typo or a corrupt file (the largest open
# models are ~10x below every bound: Llama 3.1 405B has 126 layers, hidden 16384, intermediate 53248, vocab
# 128256, 128 heads; Gemma 3 has a 262144 vocab; DeepSeek-V3 has 256 routed experts, all from their config.json)
_MAX_CONFIG_SIZE = {"hidden_size": 2**18, "num_attention_heads": 2**14, "num_hidden_layers": 2**14,
                    "vocab_size": 2**24, "intermediate_size": 2**20, "num_key_value_heads": 2**14,
                    "head_dim": 2**14, "num_local_experts": 2**14}


def architecture_from_config(cfg: dict[str, Any], where: str = "config") -> Architecture:
    """Normalize a config.json dict into an :class:`Architecture`: a wrapper's text part with its vision part
    (tables/multimodal.py), and the checkpoint's ``quantization_config`` (tables/quantization.py), if any.

    Raises:
        ConfigError: not a dict, an unsupported model_type, or a missing/invalid field.
    """
    if not isinstance(cfg, dict):
        return _text_architecture(cfg, where)
    text, vision = split_multimodal(cfg, where)
    arch = _text_architecture(text, where)
    quant = parse_quantization(cfg, where)
    return replace(arch, quantization=quant, vision=vision) if quant is not None or vision is not None else arch


def _text_architecture(cfg: dict[str, Any], where: str = "config") -> Architecture:
    """Normalize a config.json dict (a Hugging Face causal-LM config) into an :class:`Architecture`.

    Raises:
        ConfigError: not a dict, an unsupported model_type, or a missing/invalid field.
    """
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(cfg).__name__}")
    if "text_config" in cfg and "hidden_size" not in cfg:  # multimodal wrapper (Gemma 3 4B+): the LM part
        inner = dict(cfg["text_config"])
        inner.setdefault("model_type", f"{cfg.get('model_type', '')}_text")
        cfg = inner
    model_type = _need(cfg, "model_type", where)
    if model_type not in _FAMILIES:
        known = ", ".join(sorted(_FAMILIES))
        raise ConfigError(
            f"{where}: model_type '{model_type}' has no analytic inventory (known: {known}); "
            "use `ftcalc inventory --exact` with the [train] extra for other architectures"
        )
    fam = _FAMILIES[model_type]
    try:
        hidden = int(_need(cfg, "hidden_size", where))
        heads = int(_need(cfg, "num_attention_heads", where))
        layers = int(_need(cfg, "num_hidden_layers", where))
        vocab = int(_need(cfg, "vocab_size", where))
        inter = int(_need(cfg, "intermediate_size", where))
        kv = int(cfg.get("num_key_value_heads") or heads)
        head_dim = int(cfg.get("head_dim") or (hidden // heads if heads > 0 else 0))
        max_pos = int(cfg.get("max_position_embeddings") or 0)
        experts = int(cfg.get("num_local_experts") or 0)
    except (TypeError, ValueError, OverflowError) as e:
        raise ConfigError(f"{where}: a size field is not an integer ({e})") from None
    for name, val in [("hidden_size", hidden), ("num_attention_heads", heads), ("num_hidden_layers", layers),
                      ("vocab_size", vocab), ("intermediate_size", inter), ("num_key_value_heads", kv),
                      ("head_dim", head_dim)]:
        if val <= 0:
            raise ConfigError(f"{where}: {name} must be positive, got {val}")
        if val > _MAX_CONFIG_SIZE[name]:
            raise ConfigError(f"{where}: {name} {val} is beyond any causal LM ftcalc can plan for "
                              f"(at most {_MAX_CONFIG_SIZE[name]:,})")
    if not 0 <= experts <= _MAX_CONFIG_SIZE["num_local_experts"] or max_pos < 0:
        raise ConfigError(f"{where}: num_local_experts {experts} / max_position_embeddings {max_pos} out of range")
    if heads % kv:
        raise ConfigError(f"{where}: num_attention_heads ({heads}) is not a multiple of num_key_value_heads ({kv})")
    default_tie = model_type in ("gemma", "gemma2", "gemma3_text")
    tie = cfg.get("tie_word_embeddings")
    attention_bias = bool(cfg.get("attention_bias", False))
    return Architecture(
        model_type=model_type,
        hidden_size=hidden,
        intermediate_size=inter,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        vocab_size=vocab,
        max_position_embeddings=max_pos,
        tie_word_embeddings=default_tie if tie is None else bool(tie),
        norms_per_layer=fam.get("norms_per_layer", 2),
        qkv_bias=fam.get("qkv_bias", False) or attention_bias,
        o_bias=attention_bias,
        mlp_bias=bool(cfg.get("mlp_bias", False)),
        qk_norm=fam.get("qk_norm", False),
        fused_qkv=fam.get("fused_qkv", False),
        fused_gate_up=fam.get("fused_gate_up", False),
        num_experts=experts,
        experts_per_token=int(cfg.get("num_experts_per_tok") or 0),
        default_attention=fam["default_attention"],
        sliding_window=cfg.get("sliding_window"),
        final_logit_softcapping=cfg.get("final_logit_softcapping"),
        torch_dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"),
    )


def _norm(name: str) -> str:
    return name.strip().lower().replace("_", "-")


@lru_cache(maxsize=4)
def _load_catalog(root: str) -> tuple[dict[str, ModelSpec], dict[str, str]]:
    models: dict[str, ModelSpec] = {}
    alias_to_id: dict[str, str] = {}
    for path in sorted(Path(root, "models").glob("*.json")):
        try:
            entry = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: cannot read catalog entry ({e})") from None
        spec = ModelSpec(
            id=entry["id"],
            arch=architecture_from_config(entry["config"], where=str(path)),
            config=entry["config"],
            aliases=tuple(entry.get("aliases", ())),
            source=entry.get("source", ""),
        )
        models[spec.id] = spec
        for key in (spec.id, spec.id.split("/")[-1], *spec.aliases):
            alias_to_id.setdefault(_norm(key), spec.id)
    return models, alias_to_id


def list_models() -> list[ModelSpec]:
    """Every catalog entry, sorted by id."""
    models, _ = _load_catalog(str(data_dir()))
    return sorted(models.values(), key=lambda m: m.id)


def _looks_like_path(name: str) -> bool:
    """A name meant as a local path: it starts like one (./, ../, /, ~) or its first component exists here
    (``data/missing``: a typo in a folder, not a hub id ``org/name``)."""
    if name.startswith((".", "/", "~")):
        return True
    first = name.split("/", 1)[0]
    return "/" in name and bool(first) and Path(first).exists()


def _from_file(path: Path) -> ModelSpec:
    if not path.exists():
        raise UnknownModelError(f"{path}: no such file or folder (a local config.json path or a folder holding one)")
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise UnknownModelError(f"{path}: no such config.json")
    from ftcalc.validation import read_json_file

    cfg = read_json_file(path, "config.json")
    arch = architecture_from_config(cfg, where=str(path))
    return ModelSpec(id=str(path), arch=arch, config=cfg, origin="file", source=str(path))


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    """A quick TCP check of the hub endpoint (HF_ENDPOINT or huggingface.co); HF_HUB_OFFLINE=1 means no."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _from_hub(model_id: str) -> ModelSpec:
    if not _hub_reachable():
        raise UnknownModelError(
            f"model '{model_id}' is not in the catalog and the Hugging Face hub is not reachable from here "
            "(offline); pass a local config.json path or folder instead (see `ftcalc models` for the catalog)"
        )
    try:
        from transformers import AutoConfig  # heavy: only for ids not in the catalog
    except ImportError:
        raise MissingDependencyError(
            f"model '{model_id}' is not in the catalog; reading it from the Hugging Face hub needs "
            "`pip install 'ftcalc[train]'` (or pass a local config.json path)"
        ) from None
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        cfg = AutoConfig.from_pretrained(model_id).to_dict()
    except Exception as e:  # noqa: BLE001 - transformers raises many kinds for offline / missing repos
        raise UnknownModelError(
            f"model '{model_id}' is not in the catalog and the hub did not give its config "
            f"({type(e).__name__}; offline, gated or misspelled?); pass a local config.json instead"
        ) from None
    return ModelSpec(id=model_id, arch=architecture_from_config(cfg, where=model_id), config=cfg,
                     origin="hub", source=f"https://huggingface.co/{model_id}")


def resolve_model(name: str) -> ModelSpec:
    """Turn a catalog id, an alias, a local config path or a hub id into a :class:`ModelSpec`.

    Raises:
        UnknownModelError: not found anywhere; the message suggests close catalog names.
        ConfigError: the config exists but is malformed.
    """
    if not name or not str(name).strip():
        raise UnknownModelError("model name is empty; see `ftcalc models` for the catalog")
    name = str(name).strip()
    models, alias_to_id = _load_catalog(str(data_dir()))
    key = _norm(name)
    if key in alias_to_id:
        return models[alias_to_id[key]]
    path = Path(name).expanduser()
    if path.suffix == ".json" or path.exists() or _looks_like_path(name):
        return _from_file(path)
    if name.count("/") == 1 and " " not in name:
        return _from_hub(name)
    close = difflib.get_close_matches(key, list(alias_to_id), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"unknown model '{name}'{hint} (see `ftcalc models`)")
