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
    "gate_proj", "up_proj", "gate_up_proj", "down_proj", "router", "experts",
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
    """Count every parameter of ``arch`` by module kind, analytically (exact for the catalog families)."""
    h, i, n = arch.hidden_size, arch.intermediate_size, arch.num_layers
    q, kv = arch.q_dim, arch.kv_dim
    lin: list[LinearGroup] = []
    if arch.fused_qkv:  # Phi-3: one Linear h -> q + 2kv
        lin.append(LinearGroup("qkv_proj", h, q + 2 * kv, n, arch.qkv_bias))
    else:
        lin += [
            LinearGroup("q_proj", h, q, n, arch.qkv_bias),
            LinearGroup("k_proj", h, kv, n, arch.qkv_bias),
            LinearGroup("v_proj", h, kv, n, arch.qkv_bias),
        ]
    lin.append(LinearGroup("o_proj", q, h, n, arch.o_bias))
    experts = router = 0
    if arch.is_moe:
        # Mixtral in transformers 5: the router is a plain module holding an [experts, hidden] weight
        # (MixtralTopKRouter, not nn.Linear) and the experts are fused 3-D tensors: neither is a Linear
        # that bitsandbytes quantizes or LoRA targets
        router = n * arch.num_experts * h
        experts = n * arch.num_experts * (h * 2 * i + i * h)
    elif arch.fused_gate_up:
        lin += [LinearGroup("gate_up_proj", h, 2 * i, n, arch.mlp_bias), LinearGroup("down_proj", i, h, n, arch.mlp_bias)]
    else:
        lin += [
            LinearGroup("gate_proj", h, i, n, arch.mlp_bias),
            LinearGroup("up_proj", h, i, n, arch.mlp_bias),
            LinearGroup("down_proj", i, h, n, arch.mlp_bias),
        ]
    by_kind = dict.fromkeys(KINDS, 0)
    for g in lin:
        by_kind[g.kind] += g.weight_params
        by_kind["bias"] += g.bias_params
    by_kind["experts"] = experts
    by_kind["router"] = router
    by_kind["embed_tokens"] = arch.vocab_size * h
    by_kind["lm_head"] = 0 if arch.tie_word_embeddings else arch.vocab_size * h
    norms = n * arch.norms_per_layer * h + h  # per-layer norms + final norm
    if arch.qk_norm:
        norms += n * 2 * arch.head_dim
    by_kind["norms"] = norms
    return Inventory(params_by_kind=by_kind, linears=tuple(lin), tied_embeddings=arch.tie_word_embeddings)


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
    owner = parts[-2] if parts[-1] == "weight" else parts[-1]
    if owner.endswith("norm") or owner.endswith("layernorm"):
        return "norms"
    if owner == "gate" and "mlp" in parts:
        return "router"
    if owner in KINDS:
        return owner
    return "other"


def exact_inventory(config: dict[str, Any]) -> Inventory:
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
    model_type = cfg.pop("model_type")
    hf_config = AutoConfig.for_model(model_type, **{k: v for k, v in cfg.items() if k != "architectures"})
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(hf_config)
    model.tie_weights()
    by_kind = dict.fromkeys(KINDS, 0)
    by_kind["other"] = 0
    lin: dict[str, list[int]] = {}
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
            cur = lin.setdefault(kind, [mod.in_features, mod.out_features, 0, mod.bias is not None])
            cur[2] += 1
    if not by_kind["other"]:
        by_kind.pop("other")
    tied = model.get_output_embeddings() is not None and (
        model.get_output_embeddings().weight is model.get_input_embeddings().weight
    )
    return Inventory(
        params_by_kind=by_kind,
        linears=tuple(LinearGroup(k, a, b, c, bias) for k, (a, b, c, bias) in lin.items()),
        tied_embeddings=tied,
        source="meta-device",
    )
