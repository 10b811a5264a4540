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
    # Families whose activation/time ledger is derived from their parts but not yet measured on a GPU (the
    # estimate names them "unvalidated", Architecture.unvalidated_parts). Facts read from transformers 5.25
    # transformers/models/<type>/modeling_<type>.py and configuration_<type>.py:
    # olmo2: no input norm; post-attention and post-feedforward RMSNorm; q_norm/k_norm RMSNorm over the
    #   whole q (heads*head_dim) and k (kv_heads*head_dim) projections (Olmo2Attention)
    "olmo2": dict(norms_per_layer=2, qk_norm=True, qk_norm_width="full", default_attention="sdpa"),
    # granite: Llama's modules; embedding/attention/residual/logits multipliers are scalars, not parameters
    "granite": dict(norms_per_layer=2, default_attention="sdpa"),
    # cohere: one CohereLayerNorm (weight, no bias) per layer feeding attention and MLP in parallel
    #   (CohereDecoderLayer); use_qk_norm adds (heads, head_dim) / (kv_heads, head_dim) LayerNorm weights;
    #   tie_word_embeddings defaults to True (CohereConfig); logit_scale is a scalar
    "cohere": dict(norms_per_layer=1, norm_kind="layernorm_nobias", parallel_block=True,
                   qk_norm_width="full", default_tie=True, default_attention="sdpa"),
    # starcoder2: nn.LayerNorm (weight + bias) x2 and final; q/k/v/o and c_fc/c_proj carry a bias when
    #   use_bias (default True); plain GELU MLP c_fc -> c_proj (Starcoder2MLP); tied by default
    "starcoder2": dict(norms_per_layer=2, norm_kind="layernorm", mlp_kind="plain", default_tie=True,
                       default_attention="sdpa"),
    # qwen3_moe: Qwen3 attention (per-head q/k RMSNorm); Qwen3MoeSparseMoeBlock on layers not in
    #   mlp_only_layers with (idx+1) % decoder_sparse_step == 0: router ``gate`` (Qwen3MoeTopKRouter, a
    #   plain [E, H] parameter) and fused experts gate_up [E, 2I, H] / down [E, H, I], I=moe_intermediate_size
    "qwen3_moe": dict(norms_per_layer=2, qk_norm=True, default_attention="sdpa"),
    # gpt_oss: q/k/v/o with bias (attention_bias default True), per-head attention ``sinks`` [heads];
    #   GptOssTopKRouter weight [E, H] + bias [E]; GptOssExperts gate_up [E, H, 2I] + bias [E, 2I],
    #   down [E, I, H] + bias [E, H]; alternating sliding/full attention (layer_types); eager attention by
    #   default (GptOssPreTrainedModel._supports_sdpa = False: SDPA has no sink column)
    #   peft 0.22 leaves its experts alone under all-linear (no v4->v5 conversion entry for gpt_oss in
    #   peft/utils/transformers_weight_conversion.py _MODEL_TO_CONVERSION_PATTERN): attention Linears only
    "gpt_oss": dict(norms_per_layer=2, attention_sinks=True, router_bias=True, expert_bias=True,
                    all_linear_adapts_experts=False, default_attention="eager", default_attention_bias=True),
    # deepseek_v2 / deepseek_v3: MLA (DeepseekV2Attention): q_proj h -> heads*(nope+rope) or, with q_lora_rank,
    #   q_a_proj h -> q_lora_rank, q_a_layernorm, q_b_proj; kv_a_proj_with_mqa h -> kv_lora_rank+rope,
    #   kv_a_layernorm, kv_b_proj kv_lora_rank -> heads*(nope+v); o_proj heads*v -> h. Layers >=
    #   first_k_dense_replace hold the MoE: router ``gate`` [E, H], fused experts (moe_intermediate_size) and
    #   shared_experts, an MLP of width moe_intermediate_size * n_shared_experts
    "deepseek_v2": dict(norms_per_layer=2, attention_kind="mla", default_attention="sdpa"),
    "deepseek_v3": dict(norms_per_layer=2, attention_kind="mla", default_attention="sdpa"),
    # llama4_text: layers in moe_layers (default every interleave_moe_layer_step-th) hold Llama4TextMoe:
    #   Llama4Router (an nn.Linear H -> E, so peft's all-linear adapts it), fused experts (intermediate_size),
    #   shared_expert MLP (intermediate_size); the other layers a dense MLP of intermediate_size_mlp; the
    #   q/k norm is weightless (Llama4TextL2Norm); every no_rope_layer_interval-th layer skips RoPE
    #   peft 0.22's all-linear adapts the router and shared expert Linears, not the fused experts (as gpt_oss)
    "llama4_text": dict(norms_per_layer=2, router_linear=True, all_linear_adapts_experts=False,
                        default_attention="sdpa"),
}

# model_types whose ledger was measured on GPUs (docs/validation.md); the rest are estimated from their parts
VALIDATED_MODEL_TYPES = frozenset({"llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2",
                                   "gemma3_text", "phi3"})


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
    # parts beyond the Llama shape (defaults: Llama)
    norm_kind: str = "rms"  # rms | layernorm (weight + bias) | layernorm_nobias (Cohere)
    qk_norm_width: str = "head"  # head: one head_dim weight each (Qwen3, Gemma 3) | full: q_dim / kv_dim
    mlp_kind: str = "gated"  # gated: act(gate) * up -> down | plain: act(c_fc) -> c_proj (StarCoder2)
    parallel_block: bool = False  # attention and MLP read the same norm output (Cohere)
    attention_kind: str = "standard"  # standard (MHA/GQA) | mla (DeepSeek latent attention)
    attention_sinks: bool = False  # a learned logit per head in the softmax (gpt-oss)
    q_lora_rank: int = 0  # MLA
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    moe_intermediate_size: int = 0  # expert width when it differs from intermediate_size (dense layers')
    num_moe_layers: int = -1  # layers holding the MoE block (-1: all, when num_experts > 0)
    shared_expert_intermediate_size: int = 0  # an always-on MLP beside the routed experts (0: none)
    router_linear: bool = False  # the router is an nn.Linear (peft's all-linear adapts it: Llama 4)
    router_bias: bool = False
    expert_bias: bool = False
    all_linear_adapts_experts: bool = True  # peft's all-linear becomes target_parameters on the fused experts
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

    @property
    def attn_qk_dim(self) -> int:
        """Width of the queries (and keys as attention sees them): MLA's heads * (nope + rope) dims."""
        if self.attention_kind == "mla":
            return self.num_heads * (self.qk_nope_head_dim + self.qk_rope_head_dim)
        return self.q_dim

    @property
    def attn_v_dim(self) -> int:
        """Width of the attention output (o_proj's input): MLA's heads * v_head_dim."""
        return self.num_heads * self.v_head_dim if self.attention_kind == "mla" else self.q_dim

    @property
    def expert_intermediate_size(self) -> int:
        return self.moe_intermediate_size or self.intermediate_size

    @property
    def moe_layer_count(self) -> int:
        if not self.is_moe:
            return 0
        return self.num_layers if self.num_moe_layers < 0 else self.num_moe_layers

    @property
    def unvalidated_parts(self) -> tuple[str, ...]:
        """What the estimate of this architecture rests on that no GPU measurement has checked.

        Empty for the measured families. For the others the parts are named: the ledger is derived from
        the modules (norm kind, attention kind and KV shape, MLP kind, MoE block), never refused, and
        fragmentation comes from the fitted gap (the allocator simulation covers the measured families only).
        """
        if self.model_type in VALIDATED_MODEL_TYPES:
            return ()
        parts = [f"model_type '{self.model_type}' not measured on a GPU: activations derived from its modules, "
                 "fragmentation from the fitted gap (no allocator simulation)"]
        if self.attention_kind == "mla":
            parts.append("MLA attention (latent q/kv projections; the eval KV cache holds the kv_lora_rank + rope "
                         "latent): saved tensors counted as the expanded q/k/v the transformers module attends over")
        if self.attention_sinks:
            parts.append("attention sinks (per-head softmax logit): eager attention with the sink column")
        if self.norm_kind != "rms":
            parts.append(f"{self.norm_kind} norms counted as RMSNorm's saved tensors")
        if self.parallel_block:
            parts.append("parallel attention/MLP block counted as sequential")
        if self.mlp_kind == "plain":
            parts.append("GELU MLP (c_fc/c_proj)")
        if self.is_moe and self.model_type != "mixtral":
            parts.append("MoE block (routed top-k experts"
                         + (", shared expert" if self.shared_expert_intermediate_size else "")
                         + (", dense layers" if self.moe_layer_count < self.num_layers else "")
                         + "): expert time at Mixtral's measured expert_rate_ratio")
        if self.model_type == "gpt_oss":
            parts.append("experts costed in the checkpoint's compute dtype (the published checkpoint ships "
                         "them in MXFP4)")
        return tuple(parts)


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
            "`ftcalc inventory --exact --model <config.json>` (with `pip install 'ftcalc[train]'`) counts any "
            "model_type transformers can build"
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
        experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or cfg.get("n_routed_experts") or 0)
        family = _family_parts(model_type, cfg, fam, layers, heads)
        if model_type == "llama4_text":  # dense layers' MLP width; the experts' is intermediate_size
            inter = int(cfg.get("intermediate_size_mlp", 16384))
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
    default_tie = model_type in ("gemma", "gemma2", "gemma3_text") or fam.get("default_tie", False)
    tie = cfg.get("tie_word_embeddings")
    attention_bias = bool(cfg.get("attention_bias", fam.get("default_attention_bias", False)))
    if model_type == "starcoder2":  # Starcoder2Config.use_bias (default True): q/k/v/o and c_fc/c_proj
        attention_bias = bool(cfg.get("use_bias", True))
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
        mlp_bias=bool(cfg.get("mlp_bias", False)) or (model_type == "starcoder2" and attention_bias),
        qk_norm=family.pop("qk_norm", fam.get("qk_norm", False)),
        fused_qkv=fam.get("fused_qkv", False),
        fused_gate_up=fam.get("fused_gate_up", False),
        num_experts=experts,
        experts_per_token=int(cfg.get("num_experts_per_tok") or 0),
        default_attention=fam["default_attention"],
        sliding_window=cfg.get("sliding_window"),
        final_logit_softcapping=cfg.get("final_logit_softcapping"),
        torch_dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"),
        **family,
    )


def _family_parts(model_type: str, cfg: dict[str, Any], fam: dict[str, Any], layers: int,
                  heads: int) -> dict[str, Any]:
    """The Architecture fields beyond the Llama shape, from the family facts and its config keys (the
    defaults are those of transformers 5.25's configuration_<type>.py where the published config omits them)."""
    out: dict[str, Any] = {k: fam[k] for k in ("norm_kind", "qk_norm_width", "mlp_kind", "parallel_block",
                                               "attention_kind", "attention_sinks", "router_linear",
                                               "router_bias", "expert_bias", "all_linear_adapts_experts")
                                      if k in fam}
    if model_type == "cohere":
        out["qk_norm"] = bool(cfg.get("use_qk_norm", False))
    if model_type == "qwen3_moe":
        experts = int(cfg.get("num_experts", 128))
        sparse_step = int(cfg.get("decoder_sparse_step", 1) or 1)
        dense = set(cfg.get("mlp_only_layers") or [])
        out["num_moe_layers"] = sum(1 for i in range(layers)
                                    if i not in dense and experts > 0 and (i + 1) % sparse_step == 0)
        out["moe_intermediate_size"] = int(cfg.get("moe_intermediate_size", 768))
    if model_type in ("deepseek_v2", "deepseek_v3"):
        first_dense = int(cfg.get("first_k_dense_replace", 0 if model_type == "deepseek_v2" else 3) or 0)
        moe_inter = int(cfg.get("moe_intermediate_size", 1407 if model_type == "deepseek_v2" else 2048))
        shared = int(cfg.get("n_shared_experts", 2 if model_type == "deepseek_v2" else 1) or 0)
        q_rank = cfg.get("q_lora_rank", 1536)
        out.update(num_moe_layers=max(0, layers - first_dense), moe_intermediate_size=moe_inter,
                   shared_expert_intermediate_size=moe_inter * shared,
                   q_lora_rank=int(q_rank or 0), kv_lora_rank=int(cfg.get("kv_lora_rank", 512)),
                   qk_nope_head_dim=int(cfg.get("qk_nope_head_dim", 128)),
                   qk_rope_head_dim=int(cfg.get("qk_rope_head_dim", 64)),
                   v_head_dim=int(cfg.get("v_head_dim", 128) or 128))
    if model_type == "llama4_text":
        step = int(cfg.get("interleave_moe_layer_step", 1) or 1)
        moe_layers = cfg.get("moe_layers")
        if moe_layers is None:
            moe_layers = list(range(step - 1, layers, step))
        out.update(num_moe_layers=len(moe_layers), moe_intermediate_size=int(cfg.get("intermediate_size", 8192)),
                   shared_expert_intermediate_size=int(cfg.get("intermediate_size", 8192)),
                   qk_norm=False)  # Llama4TextL2Norm: weightless
    return out


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
