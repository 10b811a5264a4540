"""Parameter inventory: every weight by module kind, from the config alone (no torch).

    ftcalc inventory --model 70b            # analytic
    ftcalc inventory --model 70b --exact    # accelerate's meta device, needs the [train] extra

The analytic counter mirrors the module tree that transformers builds for each family
(``transformers/models/<type>/modeling_<type>.py``); tests/tables/test_inventory_meta.py checks it kind by
kind against ``init_empty_weights`` + ``AutoModelForCausalLM.from_config`` for every catalog entry.
:func:`exact_inventory` is also the fallback for architectures the analytic counter does not know.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ftcalc.tables.catalog import Architecture

__all__ = ["LinearGroup", "Inventory", "inventory", "exact_inventory", "KINDS", "DEFAULT_LORA_TARGETS"]

# Module kinds, in display order. "bias" collects every bias vector; "norms" every norm weight.
KINDS = (
    "embed_tokens", "q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj",
    "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj", "sinks",
    "gate_proj", "up_proj", "gate_up_proj", "down_proj", "c_fc", "c_proj", "router", "experts",
    "norms", "bias", "lm_head",
)

# peft's target_modules="all-linear" on these families hits exactly the decoder nn.Linear layers
# (every Linear but the output head: peft/tuners/tuners_utils.py _maybe_include_all_linear_layers).
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LinearGroup:
    """All instances of one decoder Linear kind: ``count`` modules of ``in_features -> out_features``."""

    kind: str
    in_features: int
    out_features: int
    count: int
    bias: bool = False

    @property
    def weight_params(self) -> int:
        return self.count * self.in_features * self.out_features

    @property
    def bias_params(self) -> int:
        return self.count * self.out_features if self.bias else 0


@dataclass(frozen=True)
class Inventory:
    """Parameters by kind (``params_by_kind``) and the decoder Linear shapes (``linears``).

    ``linears`` holds the nn.Linear layers inside the decoder blocks: what bitsandbytes quantizes for
    QLoRA and what LoRA can target. MoE expert weights are 3-D tensors (transformers 5 fuses them), not
    Linear modules, and are listed under ``experts`` only.
    """

    params_by_kind: dict[str, int]
    linears: tuple[LinearGroup, ...]
    tied_embeddings: bool
    source: str = "analytic"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_params(self) -> int:
        return sum(self.params_by_kind.values())

    @property
    def linear_weight_params(self) -> int:
        return sum(g.weight_params for g in self.linears)

    def linear(self, kind: str) -> LinearGroup | None:
        return next((g for g in self.linears if g.kind == kind), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "total_params": self.total_params,
            "params_by_kind": dict(self.params_by_kind),
            "tied_embeddings": self.tied_embeddings,
            "linears": [g.__dict__ for g in self.linears],
            "source": self.source,
        }


@lru_cache(maxsize=256)
def inventory(arch: Architecture) -> Inventory:
    """Count every parameter of ``arch`` by module kind, analytically.

    Exact (kind by kind, Linear group by Linear group) against transformers 5.25's modules for every
    family in catalog._FAMILIES: tests/tables/test_inventory_meta.py and test_inventory_families.py.
    """
    h, n = arch.hidden_size, arch.num_layers
    q, kv = arch.q_dim, arch.kv_dim
    lin: list[LinearGroup] = []
    by_kind = dict.fromkeys(KINDS, 0)
    norms = h  # the final norm
    if arch.attention_kind == "mla":
        # DeepseekV2Attention / DeepseekV3Attention (modeling_deepseek_v2.py, modeling_deepseek_v3.py, 5.25)
        nope, rope, vd = arch.qk_nope_head_dim, arch.qk_rope_head_dim, arch.v_head_dim
        qk = arch.num_heads * (nope + rope)
        if arch.q_lora_rank:
            lin += [LinearGroup("q_a_proj", h, arch.q_lora_rank, n, arch.qkv_bias),
                    LinearGroup("q_b_proj", arch.q_lora_rank, qk, n)]
            norms += n * arch.q_lora_rank  # q_a_layernorm
        else:
            lin.append(LinearGroup("q_proj", h, qk, n))
        lin += [LinearGroup("kv_a_proj_with_mqa", h, arch.kv_lora_rank + rope, n, arch.qkv_bias),
                LinearGroup("kv_b_proj", arch.kv_lora_rank, arch.num_heads * (nope + vd), n),
                LinearGroup("o_proj", arch.num_heads * vd, h, n, arch.o_bias)]
        norms += n * arch.kv_lora_rank  # kv_a_layernorm
    elif arch.fused_qkv:  # Phi-3: one Linear h -> q + 2kv
        lin += [LinearGroup("qkv_proj", h, q + 2 * kv, n, arch.qkv_bias), LinearGroup("o_proj", q, h, n, arch.o_bias)]
    else:
        lin += [
            LinearGroup("q_proj", h, q, n, arch.qkv_bias),
            LinearGroup("k_proj", h, kv, n, arch.qkv_bias),
            LinearGroup("v_proj", h, kv, n, arch.qkv_bias),
            LinearGroup("o_proj", q, h, n, arch.o_bias),
        ]
    if arch.attention_sinks:  # gpt-oss: one learned logit per head (GptOssAttention.sinks)
        by_kind["sinks"] = n * arch.num_heads

    def mlp(width: int, count: int) -> list[LinearGroup]:
        if count <= 0:
            return []
        if arch.mlp_kind == "plain":  # StarCoder2: c_fc -> GELU -> c_proj
            return [LinearGroup("c_fc", h, width, count, arch.mlp_bias), LinearGroup("c_proj", width, h, count, arch.mlp_bias)]
        if arch.fused_gate_up:
            return [LinearGroup("gate_up_proj", h, 2 * width, count, arch.mlp_bias),
                    LinearGroup("down_proj", width, h, count, arch.mlp_bias)]
        return [LinearGroup("gate_proj", h, width, count, arch.mlp_bias),
                LinearGroup("up_proj", h, width, count, arch.mlp_bias),
                LinearGroup("down_proj", width, h, count, arch.mlp_bias)]

    moe_n = arch.moe_layer_count
    lin += mlp(arch.intermediate_size, n - moe_n)  # dense layers (all of them without experts)
    experts = router = 0
    if moe_n:
        # transformers 5 fuses the experts into 3-D tensors gate_up [E, 2I, H] and down [E, H, I] (not
        # nn.Linear: bitsandbytes leaves them alone and LoRA reaches them only through target_parameters)
        e, ei = arch.num_experts, arch.expert_intermediate_size
        experts = moe_n * e * 3 * h * ei
        if arch.expert_bias:  # gpt-oss: gate_up_proj_bias [E, 2I], down_proj_bias [E, H]
            experts += moe_n * e * (2 * ei + h)
        if arch.router_linear:  # Llama4Router(nn.Linear)
            lin.append(LinearGroup("router", h, e, moe_n))
        else:  # a plain [E, H] parameter (MixtralTopKRouter, Qwen3MoeTopKRouter, GptOssTopKRouter, ...)
            router = moe_n * e * h
            if arch.router_bias:
                by_kind["bias"] += moe_n * e
        lin += mlp(arch.shared_expert_intermediate_size, moe_n if arch.shared_expert_intermediate_size else 0)
    merged: dict[tuple[str, int, int, bool], int] = {}
    for g in lin:  # a dense MLP and a shared expert of the same shape are one group
        key = (g.kind, g.in_features, g.out_features, g.bias)
        merged[key] = merged.get(key, 0) + g.count
    lin = [LinearGroup(k, a, b, c, bias) for (k, a, b, bias), c in merged.items()]
    for g in lin:
        by_kind[g.kind] += g.weight_params
        by_kind["bias"] += g.bias_params
    by_kind["experts"] = experts
    by_kind["router"] += router
    by_kind["embed_tokens"] = arch.vocab_size * h
    by_kind["lm_head"] = 0 if arch.tie_word_embeddings else arch.vocab_size * h
    norms += n * arch.norms_per_layer * h  # per-layer norms
    if arch.qk_norm:
        norms += n * (q + kv if arch.qk_norm_width == "full" else 2 * arch.head_dim)
    by_kind["norms"] = norms
    if arch.norm_kind == "layernorm":  # nn.LayerNorm: a bias beside every weight (per-layer and final)
        by_kind["bias"] += n * arch.norms_per_layer * h + h
    extra: dict[str, Any] = {}
    if moe_n:
        extra = {"moe_layers": moe_n, "num_experts": arch.num_experts,
                 "expert_intermediate_size": arch.expert_intermediate_size,
                 "all_linear_adapts_experts": arch.all_linear_adapts_experts}
    return Inventory(params_by_kind=by_kind, linears=tuple(lin), tied_embeddings=arch.tie_word_embeddings,
                     extra=extra)


def classify_parameter(name: str) -> str:
    """Map a transformers parameter name (``model.layers.3.self_attn.q_proj.weight``) to a kind in KINDS."""
    parts = name.split(".")
    if parts[-1] == "bias":
        return "bias"
    if "embed_tokens" in parts:
        return "embed_tokens"
    if parts[0] == "lm_head":
        return "lm_head"
    if "experts" in parts:
        return "experts"
    if parts[-1] == "sinks":
        return "sinks"
    owner = parts[-2] if parts[-1] == "weight" else parts[-1]
    if owner.endswith("norm") or owner.endswith("layernorm"):
        return "norms"
    if owner == "gate" and "mlp" in parts:
        return "router"
    if owner in KINDS:
        return owner
    return "other"


def exact_inventory(config: dict[str, Any], where: str = "config") -> Inventory:
    """Build the model on accelerate's meta device and count its parameters by kind (needs [train]).

    Ties are restored with ``model.tie_weights()`` (``init_empty_weights`` breaks them) and shared
    tensors are counted once, as ``model.parameters()`` does on a real model.
    """
    try:
        import torch  # noqa: F401
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM
    except ImportError:
        from ftcalc.errors import MissingDependencyError

        raise MissingDependencyError("the exact inventory needs `pip install 'ftcalc[train]'`") from None
    cfg = dict(config)
    if "text_config" in cfg and "hidden_size" not in cfg:
        inner = dict(cfg["text_config"])
        inner.setdefault("model_type", f"{cfg.get('model_type', '')}_text")
        cfg = inner
    from ftcalc.errors import ConfigError

    model_type = cfg.pop("model_type", None)
    if not model_type:
        raise ConfigError(f"{where}: config has no 'model_type' (a Hugging Face config.json names its architecture)")
    try:
        hf_config = AutoConfig.for_model(model_type, **{k: v for k, v in cfg.items() if k != "architectures"})
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(hf_config)
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # unknown type, not a causal LM, bad field
        import transformers

        first = str(e).strip().splitlines()[0].split(". ")[0][:200] if str(e).strip() else ""
        raise ConfigError(f"{where}: transformers {transformers.__version__} cannot build a causal LM from "
                          f"model_type '{model_type}' ({type(e).__name__}: {first})") from None
    model.tie_weights()
    by_kind = dict.fromkeys(KINDS, 0)
    by_kind["other"] = 0
    lin: dict[tuple[str, int, int, bool], int] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            continue
        seen.add(id(p))
        kind = classify_parameter(name)
        by_kind[kind] += p.numel()
    import torch.nn as nn

    for mod_name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and ".layers." in f".{mod_name}.":
            kind = mod_name.split(".")[-1]
            kind = "router" if kind == "gate" else kind
            key = (kind, mod.in_features, mod.out_features, mod.bias is not None)
            lin[key] = lin.get(key, 0) + 1
    if not by_kind["other"]:
        by_kind.pop("other")
    tied = model.get_output_embeddings() is not None and (
        model.get_output_embeddings().weight is model.get_input_embeddings().weight
    )
    return Inventory(
        params_by_kind=by_kind,
        linears=tuple(LinearGroup(k, a, b, c, bias) for (k, a, b, bias), c in lin.items()),
        tied_embeddings=tied,
        source="meta-device",
    )
