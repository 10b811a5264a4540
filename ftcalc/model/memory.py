"""The memory model: one function per component, in bytes, and the peak over the phases of a step.

    ftcalc estimate --model 8b --method lora --seq-len 2048 --batch-size 4 --gpu h100

It describes the recipe in ftcalc/train/recipe.py (transformers + peft + bitsandbytes, bf16 autocast, torch
AdamW, the model's own causal-LM loss). Each formula names its source: a library file whose code
decides the allocation, a paper, or "fitted" (a coefficient in data/coefficients.json, made by
``ftcalc calibrate`` or the script its ``provenance`` section names, from the measurements in data/measurements/). docs/memory-model.md walks
through it with Llama-3-8B LoRA and Llama-3-70B QLoRA.

What is allocated when (one training step, after the first, which has created the optimizer states):

1. resident: weights (+ LoRA adapters) and optimizer states;
2. forward: each decoder layer saves the tensors its backward needs (``activation_*``); with
   gradient checkpointing only each layer's input is kept (``checkpoint_bytes``);
3. loss: logits B*T*V, upcast to fp32 (transformers/loss/loss_utils.py ForCausalLMLoss) and log-softmax
   saved; at the first backward op three fp32 B*T*V buffers are live (``logits_bytes``);
4. backward: layer by layer (recomputed first under checkpointing), freeing saved tensors and
   allocating gradients and short-lived gradient buffers (``backward_transient_bytes``);
5. optimizer step: gradients + states + the foreach implementation's temporary copy
   (``optimizer_step_transient_bytes``).

The peak allocated is the largest of the phase totals; reserved adds the caching allocator's
fragmentation (fitted), and device used adds the CUDA context and memory outside the allocator
(paged optimizer states live in CUDA unified memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ftcalc.errors import ConfigError, InvalidArgumentError
from ftcalc.model.allocsim.coverage import (  # noqa: F401
    SIMULATED_MODEL_TYPES,
    SIMULATED_OPTIMIZERS,
    sequence_ops_covered,
    simulation_supported,
)
from ftcalc.model.options import TrainingOptions
from ftcalc.model.units import (  # noqa: F401
    DQ_BLOCK,
    NF4_BLOCK,
    installed_transformers,
    linear_out_bytes_per_element,
    quantized_linear_bytes,
    residual_bytes_per_element,
    resolve_attention,
    unquantized_bytes_per_param,
    uses_autocast,
    weight_bytes_per_param,
)
from ftcalc.sizes import GIB
from ftcalc.tables.catalog import Architecture
from ftcalc.tables.inventory import Inventory
from ftcalc.tables.quantization import QuantScheme, module_path

__all__ = [
    "Coefficients", "load_coefficients", "MemoryEstimate", "estimate_memory",
    "weights_bytes", "quantized_linear_bytes", "lora_params", "gradient_bytes", "optimizer_state_bytes",
    "optimizer_step_transient_bytes", "activation_terms_per_token", "checkpoint_bytes", "logits_bytes",
    "kv_cache_bytes", "checkpoint_options", "checkpoint_refusal", "checkpoint_unvalidated", "vision_weight_bytes",
    "vision_lora_params", "expert_lora_targeted",
    "expert_lora_bytes", "unquantized_bytes_per_param",
]

BNB_8BIT_BLOCK = 256  # bitsandbytes 8-bit optimizer blockwise quantization (optim/optimizer.py)
BNB_MIN_8BIT_SIZE = 4096  # tensors with fewer elements keep 32-bit states (bitsandbytes optimizer default)


# --------------------------------------------------------------------------- coefficients


@dataclass(frozen=True)
class Coefficients:
    """Free coefficients of the model, fitted from measurements (data/coefficients.json).

    Every structural byte count comes from the mechanism; these cover what the mechanism leaves
    open: the caching allocator's fragmentation, the memory outside the allocator, small per-token
    leftovers and the short-lived buffers of the backward pass.
    """

    activation_scale: float = 1.0  # multiplies the per-layer saved-tensor ledger
    fixed_allocated_bytes: float = 64 * 2**20  # cuBLAS workspace, RNG state, small tensors
    backward_transient_per_token_i: float = 2.0  # bytes per token per intermediate unit (x po) in a layer's backward
    backward_transient_per_token_h: float = 4.0  # bytes per token per hidden unit (x rd)
    logits_buffers_fp32: float = 3.0  # fp32 B*T*V buffers live at the first backward op
    reserved_gap_fixed: float = 0.3 * GIB  # caching allocator: reserved - allocated at the peak
    reserved_gap_per_logits_byte: float = 0.5  # x the fp32 logits size (largest transient blocks)
    reserved_gap_per_layer_byte: float = 0.5  # x one layer's saved activations
    reserved_gap_fraction: float = 0.02  # x peak allocated
    reserved_gap_optimizer_logits: float = 1.0  # x the logits blocks still cached when the optimizer step peaks
    reserved_gap_nockpt_grads: float = 0.8  # x min(saved activations, gradients): full FT without checkpointing
    reserved_gap_eager_scores: float = 1.0  # x one layer's fp32 attention scores (B*heads*T*T*4), eager attention
    reserved_gap_cached_step_tmp: float = 0.5  # x the optimizer step's temporary copy, cached when the loss peaks
    reserved_gap_tied_full_logits: float = 0.0  # x the fp32 logits block: full FT, tied embeddings, checkpointing
    context_bytes: float = 0.78 * GIB  # CUDA context + library workspaces outside the allocator
    paged_resident_fraction: float = 1.0  # share of paged optimizer states resident on the GPU
    source: str = "defaults (not fitted)"
    fitted_on: int = 0

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Coefficients:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


@lru_cache(maxsize=8)
def _load_coefficients_file(path: str) -> Coefficients:
    p = Path(path)
    if not p.is_file():
        return Coefficients()
    raw = read_coefficients_json(p)
    return Coefficients.from_dict(_checked_section(p, raw.get("memory", raw), Coefficients, "memory"))


def read_coefficients_json(p: Path) -> dict[str, Any]:
    """A coefficients file as a dict, or one ConfigError line naming the file."""
    from ftcalc.validation import read_json_file

    raw = read_json_file(p, "coefficients file")
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: not a coefficients file (expected a JSON object)")
    return raw


def _checked_section(p: Path, d: Any, cls: type, name: str) -> dict[str, Any]:
    """Refuse a section whose numeric coefficients are not finite numbers (NaN would reach every answer)."""
    import math

    if not isinstance(d, dict):
        raise ConfigError(f"{p}: section {name!r} is not a JSON object")
    for k, default in ((f.name, f.default) for f in cls.__dataclass_fields__.values()):
        if k in d and isinstance(default, (int, float)) and not isinstance(default, bool):
            v = d[k]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{p}: {name}.{k} = {v!r}, expected a finite number")
    return d


def load_coefficients(path: str | Path | None = None) -> Coefficients:
    """The fitted coefficients (data/coefficients.json), or the defaults when the file is absent."""
    from ftcalc._paths import coefficients_file

    return _load_coefficients_file(str(path or coefficients_file()))


# --------------------------------------------------------------------------- dtypes of the recipe


# --------------------------------------------------------------------------- weights


def expert_lora_targeted(inv: Inventory, opts: TrainingOptions) -> bool:
    """Whether peft adapts an MoE model's fused expert tensors and router too.

    peft 0.21 on transformers-5 MoE models (Mixtral: ``gate_up_proj`` [E, 2I, H] and ``down_proj`` [E, H, I]
    are 3-D parameters, not Linear modules) turns ``"all-linear"`` into ``target_parameters`` for the
    experts and the router (peft/utils/transformers_weight_conversion.py ``_convert_peft_config_moe``,
    huggingface/peft#3232) and wraps them with ``lora.ParamWrapper``, which refuses ``lora_dropout != 0``.
    Measured on one H200 (runs i-006/i-007, Mixtral-8x7B, 2048 tokens): 13.6 M trainable parameters with
    attention-only targets, 359.7 M with all-linear."""
    return (opts.uses_adapters and "all-linear" in opts.lora_targets and inv.params_by_kind.get("experts", 0) > 0
            and inv.extra.get("all_linear_adapts_experts", True))


def _moe_dims(inv: Inventory) -> tuple[int, int, int, int]:
    """(layers, experts, hidden, intermediate) of an MoE inventory (router [E, H] and fused experts per layer)."""
    o = inv.linear("o_proj")
    h = o.out_features if o else 1
    if "moe_layers" in inv.extra:  # the analytic inventory knows which layers hold experts (DeepSeek, Llama 4)
        return inv.extra["moe_layers"], inv.extra["num_experts"], h, inv.extra["expert_intermediate_size"]
    layers = o.count if o else 1
    e = max(1, inv.params_by_kind.get("router", 0) // max(1, layers * h))
    i = inv.params_by_kind.get("experts", 0) // max(1, layers * e * 3 * h)
    return layers, e, h, i


def lora_params(inv: Inventory, opts: TrainingOptions) -> int:
    """Adapter parameters: r * (in + out) per targeted Linear (peft LoraLayer.update_layer); on MoE models
    under ``all-linear`` also peft's ParamWrapper adapters of the experts and the router, one A/B pair per
    expert (``lora_A`` [E r, in], ``lora_B`` [out, E r]; the fused gate_up at rank 2r): r E (3H + 5I) + r H + E r
    per layer."""
    if not opts.uses_adapters:
        return 0
    total = 0
    for g in inv.linears:
        if opts.is_target(g.kind):
            total += g.count * opts.lora_r * (g.in_features + g.out_features)
    if expert_lora_targeted(inv, opts):
        layers, e, h, i = _moe_dims(inv)
        r = opts.lora_r
        total += layers * (r * e * (3 * h + 5 * i) + r * h + e * r)
    return total


def expert_lora_bytes(inv: Inventory, opts: TrainingOptions) -> dict[str, float]:
    """Memory of peft's ParamWrapper on the fused experts (0 when not targeted).

    Every forward of an MoE layer builds the merged expert weights W' = W + B A in full
    (``_LoraFactorsProxy``: ``torch.baddbmm``, peft/tuners/lora/layer.py), which the expert matmuls save for
    backward; backward then creates a full-size gradient of W' as well, gate_up's and down's one after the
    other. ``per_layer_saved``: W' of one layer (kept by every layer without checkpointing); ``transient``:
    the larger of W' + grad(down) and gate_up's W' + grad(gate_up), i.e. 2 x gate_up, alive in one layer's
    backward (with checkpointing the recomputed W' included)."""
    if not expert_lora_targeted(inv, opts):
        return {"per_layer_saved": 0.0, "transient": 0.0}
    layers, e, h, i = _moe_dims(inv)
    b = unquantized_bytes_per_param(opts)
    stack = e * 3 * h * i * b
    return {"per_layer_saved": float(stack), "transient": float(2 * e * 2 * i * h * b)}


def checkpoint_options(quant: QuantScheme | None, opts: TrainingOptions) -> TrainingOptions:
    """The options a pre-quantized checkpoint really trains with: LoRA on a bitsandbytes 4-bit checkpoint is
    QLoRA (the same Linear4bit storage, and TRL's SFTTrainer calls peft's prepare_model_for_kbit_training
    for any model ``is_loaded_in_4bit``), with the checkpoint's own double quantization."""
    if quant is not None and quant.format == "bnb-4bit" and opts.uses_adapters:
        if opts.method != "qlora" or opts.double_quant != quant.double_quant:
            return opts.model_copy(update={"method": "qlora", "double_quant": quant.double_quant})
    return opts


def checkpoint_refusal(quant: QuantScheme | None, method: str, precision: str = "bf16-true") -> str | None:
    """Why ``method`` cannot train a checkpoint quantized as ``quant`` (None: it can)."""
    if quant is None:
        return None
    from ftcalc.validation import param

    if method == "full":
        return (f"{param('method')} full on a checkpoint already quantized ({quant.label}): its packed weights have "
                f"no gradients; use {param('method')} lora on it, or full fine-tuning of the unquantized base model")
    if quant.format == "mxfp4":
        # transformers/quantizers/quantizer_mxfp4.py (v5.25): Mxfp4HfQuantizer.is_trainable is False
        return ("an MXFP4 checkpoint does not train as it loads (transformers' Mxfp4HfQuantizer is not trainable); "
                "load it with Mxfp4Config(dequantize=True), i.e. bf16 weights: estimate that config.json without its "
                "quantization_config")
    if method == "qlora" and quant.format != "bnb-4bit":
        return (f"{param('method')} qlora on a checkpoint already quantized ({quant.label}): bitsandbytes cannot "
                f"requantize it; use {param('method')} lora on it as it is")
    if precision != "bf16-true" and quant.format != "bnb-4bit":
        return (f"{param('precision')} {precision} on a pre-quantized checkpoint ({quant.label}): its Linears compute "
                f"in 16 bit; use {param('precision')} bf16-true")
    return None


def checkpoint_unvalidated(quant: QuantScheme | None, inv: Inventory) -> list[str]:
    """The parts of an estimate for a pre-quantized checkpoint that no measurement backs."""
    if quant is None:
        return []
    out: list[str] = []
    if quant.format == "bnb-4bit":
        if quant.not_converted:
            out.append("bitsandbytes llm_int8_skip_modules: the skipped Linears are counted as 4-bit")
    else:
        out.append(f"{quant.label} weights: packed size from the format's storage rule, not measured")
        out.append("dequantization transient: one bf16 copy of the largest quantized Linear, not measured")
        if quant.format == "awq":
            out.append("AWQ training needs gptqmodel>=5 (transformers quantizer_awq.py is_trainable)")
        if quant.format == "bnb-8bit":
            out.append("bitsandbytes 8-bit: LLM.int8 activations and outlier buffers not modelled")
    if inv.params_by_kind.get("experts", 0) and quant.format not in ("bnb-4bit",):
        out.append("MoE experts: counted at the weights' dtype, their quantized storage not modelled")
    return out


def vision_lora_params(arch: Architecture, opts: TrainingOptions) -> int:
    """LoRA parameters on a multimodal wrapper's vision Linears that the targets also hit (peft matches module
    names anywhere in the model; all-linear adapts every Linear but the output layer)."""
    if arch.vision is None or not opts.uses_adapters:
        return 0
    names = None if "all-linear" in opts.lora_targets else tuple(opts.lora_targets)
    return arch.vision.lora_params(opts.lora_r, names)


def vision_weight_bytes(arch: Architecture, opts: TrainingOptions) -> float:
    """A multimodal wrapper's vision tower and projector, frozen: their weights only (no gradient, no optimizer
    state). QLoRA: bitsandbytes quantizes the tower's Linears like the decoder's, the rest at the upcast dtype."""
    v = arch.vision
    if v is None:
        return 0.0
    if opts.method == "qlora":
        lin = sum(i * o * c for _, i, o, c in v.linears)
        q = sum(quantized_linear_bytes(i * o, opts.double_quant) * c for _, i, o, c in v.linears)
        return q + unquantized_bytes_per_param(opts) * (v.params - lin)
    return float(weight_bytes_per_param(opts) * v.params)


def _prequantized_weights_bytes(inv: Inventory, opts: TrainingOptions, quant: QuantScheme) -> dict[str, float]:
    """A pre-quantized checkpoint (GPTQ, AWQ, FP8, bitsandbytes 8-bit) under LoRA: each decoder Linear the
    format converts at its packed size with its scales and zero points (``QuantScheme.linear_bytes``), the
    Linears it leaves out (``modules_to_not_convert``) and everything else (embeddings, head, norms, biases,
    MoE experts) at the element size of the weights' dtype; bitsandbytes 8-bit: fp32, as peft's
    ``prepare_model_for_kbit_training`` upcasts them (peft/utils/other.py)."""
    rest_b = 4 if quant.format == "bnb-8bit" else weight_bytes_per_param(opts)
    linear = 0.0
    kept = 0
    for g in inv.linears:
        if quant.converts(module_path(g.kind)):
            linear += quant.linear_bytes(g.in_features, g.out_features) * g.count
        else:
            kept += g.weight_params
    rest = inv.total_params - inv.linear_weight_params + kept
    packed = sum(g.weight_params * quant.bits / 8 for g in inv.linears if quant.converts(module_path(g.kind)))
    return {"weights": linear + rest_b * rest, "quant_state": linear - packed,
            "lora_adapters": _trainable_bytes_per_param(opts) * lora_params(inv, opts) if opts.uses_adapters else 0.0}


def weights_bytes(inv: Inventory, opts: TrainingOptions, quant: QuantScheme | None = None) -> dict[str, float]:
    """Resident parameter bytes: base weights by dtype, and LoRA adapters (fp32, as peft keeps them).

    QLoRA: every decoder Linear in NF4 (``quantized_linear_bytes``), everything else (embeddings,
    lm_head, norms, biases) upcast to fp32 by prepare_model_for_kbit_training (sharded QLoRA: bf16, and
    bf16 adapters). ``quant_state``: the part of the weights that is the 4-bit Linears' quantization
    constants (absmax, the second-level absmax and code), which the sharded build keeps whole on every rank.
    """
    out: dict[str, float] = {}
    opts = checkpoint_options(quant, opts)
    if quant is not None and quant.format != "bnb-4bit":
        return _prequantized_weights_bytes(inv, opts, quant)
    if opts.method == "qlora":
        linear = sum(quantized_linear_bytes(g.in_features * g.out_features, opts.double_quant) * g.count
                     for g in inv.linears)
        linear_params = inv.linear_weight_params
        rest = inv.total_params - linear_params
        out["weights"] = linear + unquantized_bytes_per_param(opts) * rest
        out["quant_state"] = linear - sum(g.in_features * g.out_features / 2 * g.count for g in inv.linears)
    else:
        out["weights"] = weight_bytes_per_param(opts) * inv.total_params
        out["quant_state"] = 0.0
    out["lora_adapters"] = _trainable_bytes_per_param(opts) * lora_params(inv, opts) if opts.uses_adapters else 0.0
    return out


def trainable_params(inv: Inventory, opts: TrainingOptions) -> int:
    return lora_params(inv, opts) if opts.uses_adapters else inv.total_params


def _trainable_bytes_per_param(opts: TrainingOptions) -> int:
    """Gradient and optimizer-state element size: the trainable parameters' dtype (fp32 adapters; bf16 for
    sharded QLoRA)."""
    if opts.uses_adapters:
        return 2 if opts.sharded_qlora else 4
    return weight_bytes_per_param(opts)


def gradient_bytes(inv: Inventory, opts: TrainingOptions) -> float:
    """One gradient per trainable parameter, in the parameter's dtype (torch autograd accumulates .grad)."""
    return trainable_params(inv, opts) * _trainable_bytes_per_param(opts)


def _param_sizes(inv: Inventory, opts: TrainingOptions) -> list[tuple[int, int]]:
    """(numel, count) of the trainable tensors, for per-tensor optimizer rules."""
    if opts.uses_adapters:
        out = []
        for g in inv.linears:
            if opts.is_target(g.kind):
                out += [(opts.lora_r * g.in_features, g.count), (opts.lora_r * g.out_features, g.count)]
        return out
    out = [(g.in_features * g.out_features, g.count) for g in inv.linears]
    for kind in ("embed_tokens", "lm_head", "experts"):
        if inv.params_by_kind.get(kind):
            out.append((inv.params_by_kind[kind], 1))
    if inv.params_by_kind.get("experts"):  # fused 3-D expert tensors: gate_up and down per layer
        out[-1] = (inv.params_by_kind["experts"] // max(1, sum(g.count for g in inv.linears if g.kind == "o_proj")) // 2,
                   2 * sum(g.count for g in inv.linears if g.kind == "o_proj"))
    small = inv.params_by_kind.get("norms", 0) + inv.params_by_kind.get("bias", 0)
    if small:
        out.append((small, 1))  # many small vectors, counted together
    return out


def optimizer_state_bytes(inv: Inventory, opts: TrainingOptions) -> dict[str, float]:
    """Optimizer states, split into what the caching allocator holds and what lives in unified memory.

    - adamw_torch / adamw_torch_fused: exp_avg and exp_avg_sq, ``zeros_like(param)`` (torch/optim/adamw.py),
      so bf16 for bf16 parameters.
    - adamw_8bit / paged_adamw_8bit: two uint8 states plus fp32 absmax per 256-block for tensors of at
      least 4096 elements, fp32 states otherwise (bitsandbytes/optim/optimizer.py Optimizer2State).
    - paged_*: the same states allocated in CUDA unified memory (bitsandbytes paged tensors): outside
      torch's allocator, but resident on the device while it has room.
    - sgd (no momentum): none. adafactor: factored second moment, a row and a column vector per
      matrix (transformers/optimization.py Adafactor).
    """
    name = opts.optimizer
    p = _trainable_bytes_per_param(opts)
    n = trainable_params(inv, opts)
    states = 0.0
    if name in ("adamw_torch", "adamw_torch_fused"):
        states = 2 * n * p
    elif name == "paged_adamw_32bit":
        states = 2 * n * 4
    elif name in ("adamw_8bit", "paged_adamw_8bit"):
        for numel, count in _param_sizes(inv, opts):
            if numel >= BNB_MIN_8BIT_SIZE:
                states += count * (2 * numel + 2 * 4 * math.ceil(numel / BNB_8BIT_BLOCK))
            else:
                states += count * 2 * numel * 4
    elif name == "adafactor":
        if opts.uses_adapters:  # lora_A (r x in) and lora_B (out x r): a row and a column vector each
            states = sum(2 * (opts.lora_r + g.in_features + g.out_features + opts.lora_r) * g.count
                         for g in inv.linears if opts.is_target(g.kind)) / 2 * p
        else:
            states = sum((g.in_features + g.out_features) * g.count for g in inv.linears)
            embed_rows = inv.params_by_kind.get("embed_tokens", 0)
            h = max((g.in_features for g in inv.linears), default=1)
            states += 2 * (embed_rows // max(h, 1) + h) if inv.params_by_kind.get("lm_head") else (embed_rows // max(h, 1) + h)
            states += inv.params_by_kind.get("norms", 0) + inv.params_by_kind.get("bias", 0)  # 1-D: full moment
            states *= p
    paged = name.startswith("paged_")
    return {"optimizer_states": 0.0 if paged else states, "optimizer_states_paged": states if paged else 0.0}


def optimizer_step_transient_bytes(inv: Inventory, opts: TrainingOptions) -> float:
    """Temporary memory of ``optimizer.step()``.

    torch AdamW's foreach path (torch/optim/adamw.py _multi_tensor_adamw) builds
    ``exp_avg_sq_sqrt = torch._foreach_sqrt(exp_avg_sqs)``: one full copy of the second moment. The
    fused kernel and bitsandbytes' per-tensor kernels allocate nothing of that size; Adafactor works
    tensor by tensor with fp32 copies of one gradient and one parameter.
    """
    name = opts.optimizer
    p = _trainable_bytes_per_param(opts)
    if name == "adamw_torch":
        return trainable_params(inv, opts) * p
    if name == "adafactor":
        # one tensor at a time: fp32 copies of its gradient and parameter, grad**2, and the factored
        # second-moment estimate expanded to full size (transformers/optimization.py Adafactor.step)
        largest = max((numel for numel, _ in _param_sizes(inv, opts)), default=0)
        return largest * 4 * 4
    return 0.0


# --------------------------------------------------------------------------- activations


def _norm_saved(width: int, opts: TrainingOptions, trainable_weight: bool, gemma_style: bool) -> float:
    """Saved bytes per token of one RMSNorm (transformers modeling_llama.py LlamaRMSNorm).

    ``hidden.to(float32)`` is saved by pow and mul (4 bytes/element; for an fp32 residual it is the
    residual tensor itself, kept alive by the save). A trainable weight also saves the normalized
    input: in the input dtype for Llama-style norms, fp32 for Gemma-style ``(1 + weight)`` norms.
    """
    saved = 4.0 * width
    if trainable_weight:
        saved += (4 if gemma_style else residual_bytes_per_element(opts)) * width
    return saved


def _lora_saved_per_input(opts: TrainingOptions) -> float:
    """Saved bytes per input element of one LoRA-adapted Linear (peft/tuners/lora/layer.py Linear.forward).

    peft casts the input to the adapter dtype (fp32), applies dropout (a 1-byte bool mask is saved,
    aten native_dropout) and lora_A; under autocast lora_A's input is cast to bf16 and that copy is
    saved for lora_A's weight gradient. Without autocast the fp32 dropout output is saved.
    """
    mask = 1.0 if opts.lora_dropout > 0 else 0.0
    return mask + (2.0 if uses_autocast(opts) else 4.0)


def activation_terms_per_token(arch: Architecture, opts: TrainingOptions, inv: Inventory,
                               attention: str | None = None) -> dict[str, float]:
    """Bytes saved for backward per token by ONE decoder layer (no checkpointing), by part.

    The ledger follows what autograd saves in transformers' Llama-family layers: a frozen weight's
    matmul does not save its input (PyTorch autograd saves an input only when the gradient that needs
    it is required: tools/autograd/gen_variable_type.py ``should_compute_output`` guards).
    """
    h, i = arch.hidden_size, arch.intermediate_size
    qd, kvd, nh = arch.q_dim, arch.kv_dim, arch.num_heads
    full = opts.method == "full"
    po = linear_out_bytes_per_element(opts)
    gemma_norm = arch.model_type.startswith("gemma")
    attn = attention or resolve_attention(arch, opts)
    terms: dict[str, float] = {}
    # norms: input + post-attention (+ Gemma 2/3's pre/post feed-forward norms)
    terms["norms"] = arch.norms_per_layer * _norm_saved(h, opts, full, gemma_norm)
    if arch.qk_norm:
        terms["norms"] += _norm_saved(qd, opts, full, gemma_norm) + _norm_saved(kvd, opts, full, gemma_norm)
    # inputs saved by trainable linears (full fine-tuning): the weight gradient needs them
    if full:
        cast = 2 if uses_autocast(opts) else 4  # under autocast the bf16 copy is what the matmul saves
        shared = residual_bytes_per_element(opts) == cast  # norm output already in the compute dtype: one copy
        qkv_in = h * (1 if (shared or arch.fused_qkv) else 3) * cast
        gu_in = h * (1 if (shared or arch.fused_gate_up or arch.is_moe or arch.mlp_kind == "plain") else 2) * cast
        down_in = arch.expert_intermediate_size if arch.is_moe else i
        terms["linear_inputs"] = qkv_in + arch.attn_v_dim * cast + gu_in + down_in * cast
    # LoRA: every adapted Linear saves its own input copy (+ dropout mask), and lora_B its input
    if opts.uses_adapters:
        per = _lora_saved_per_input(opts)
        lora = 0.0
        for g in inv.linears:
            if opts.is_target(g.kind):
                lora += (g.in_features * per + opts.lora_r * (2 if uses_autocast(opts) else 4)) * (g.count / arch.num_layers)
        terms["lora_inputs"] = lora
    # attention
    # MLA (DeepseekV2Attention): the latent projections are expanded before attention, which sees queries and keys
    # of heads * (nope + rope) and values of heads * v_head_dim (modeling_deepseek_v2.py, transformers 5.25)
    mla = arch.attention_kind == "mla"
    qk, vo = arch.attn_qk_dim, arch.attn_v_dim
    if attn == "eager":
        # q, repeated k and v (transformers repeat_kv materializes them), softmax output in fp32 and
        # its bf16 copy (modeling_llama.py eager_attention_forward), output
        ab = 2 if uses_autocast(opts) else 4
        seq = opts.seq_len
        quad = (4 + ab) * nh * seq
        if arch.model_type == "gemma2":
            quad += ab * nh * seq  # logit soft-capping: tanh output saved
        terms["attention"] = ((2 * qk + vo) if mla else 3 * qd) * ab + quad
    else:
        # SDPA (flash / efficient): q, k, v, output in the compute dtype + fp32 logsumexp per head
        ab = 2 if uses_autocast(opts) else 4
        terms["attention"] = ((2 * qk + 2 * vo) if mla else (2 * qd + 2 * kvd)) * ab + 4 * nh
    # MLP: act_fn saves its input, act * up saves both factors (3 x intermediate, output dtype); a plain
    # act(c_fc) -> c_proj MLP (StarCoder2) saves the activation's input only
    dense = (1 if arch.mlp_kind == "plain" else 3) * i * po
    if arch.is_moe:
        # routed layers: top-k experts' gate/up/act saves per token, fp32 router logits, a shared expert beside
        # them; layers before/between the MoE ones (DeepSeek's first_k_dense_replace, Llama 4's interleave) hold
        # the dense MLP. Averaged over the layers: the terms are per layer.
        k = max(1, arch.experts_per_token)
        moe = (k * 3 * arch.expert_intermediate_size * po + arch.num_experts * 4
               + 3 * arch.shared_expert_intermediate_size * po)
        m = arch.moe_layer_count
        terms["mlp"] = (m * moe + (arch.num_layers - m) * dense) / arch.num_layers
    else:
        terms["mlp"] = dense
    return terms


def checkpoint_bytes(arch: Architecture, opts: TrainingOptions) -> float:
    """Gradient checkpointing keeps each decoder layer's input hidden states (torch.utils.checkpoint,
    non-reentrant: the inputs are held for the recomputation): L * B * T * H in the residual dtype."""
    return arch.num_layers * opts.tokens_per_step * arch.hidden_size * residual_bytes_per_element(opts)


def logits_bytes(arch: Architecture, opts: TrainingOptions, coeffs: Coefficients) -> float:
    """Peak bytes of the loss: B*T*V logits, fp32 upcast, log-softmax saved, its gradient.

    transformers ForCausalLMLoss upcasts the logits to fp32 (``logits.float()``) before cross_entropy;
    log_softmax saves its fp32 output, and at the first backward op nll_loss's gradient and
    log_softmax's gradient are live beside it: three fp32 B*T*V buffers (``logits_buffers_fp32``).
    Gemma 2's final soft-capping saves a bf16 tanh output. ``loss="fused"`` (Liger fused linear
    cross-entropy, liger_kernel/ops/fused_linear_cross_entropy.py) never materializes B*T*V: it works
    on chunks of ~N/ceil(V/H) tokens and keeps the hidden-state gradient (N*H).
    """
    n = opts.tokens_per_step
    v, h = arch.vocab_size, arch.hidden_size
    if opts.loss == "fused":
        chunks = max(1, math.ceil(v / h))
        chunk = 2 ** math.ceil(math.log2(max(1, math.ceil(n / chunks))))
        return chunk * v * (2 + 4 + 4) + n * h * 4
    total = coeffs.logits_buffers_fp32 * 4 * n * v
    if arch.final_logit_softcapping:
        total += 2 * n * v
    return total


def backward_transient_bytes(arch: Architecture, opts: TrainingOptions, coeffs: Coefficients) -> float:
    """Short-lived gradient buffers inside one layer's backward (fitted: the widest are intermediate-sized)."""
    n = opts.tokens_per_step
    return n * (coeffs.backward_transient_per_token_i * arch.intermediate_size * linear_out_bytes_per_element(opts)
                + coeffs.backward_transient_per_token_h * arch.hidden_size * residual_bytes_per_element(opts))


def _qlora_dequant_bytes(inv: Inventory, opts: TrainingOptions, quant: QuantScheme | None = None) -> float:
    """bitsandbytes dequantizes a 4-bit weight to bf16 for each matmul (MatMul4Bit): the largest one. A
    pre-quantized checkpoint's Linear is taken to do the same (bitsandbytes 8-bit: MatMul8bitLt's backward
    dequantizes CB x SCB; GPTQ/AWQ's torch and triton kernels dequantize the weight for a large batch; FP8:
    not measured): one bf16 copy of the largest converted Linear."""
    if quant is not None and quant.format != "bnb-4bit":
        return 2.0 * max((g.in_features * g.out_features for g in inv.linears if quant.converts(module_path(g.kind))),
                         default=0)
    if opts.method != "qlora":
        return 0.0
    return 2.0 * max((g.in_features * g.out_features for g in inv.linears), default=0)


def kv_cache_bytes(arch: Architecture, batch_size: int, context_len: int, dtype_bytes: int = 2) -> float:
    """KV cache for evaluation/generation: 2 (K and V) * layers * kv_heads * head_dim * tokens. MLA caches the
    compressed latent, kv_lora_rank + qk_rope_head_dim per token and layer, and expands it after the cache read
    (DeepseekV2Attention.forward: ``cache.update(k_nope, k_pe, ...)`` before ``expand_kv``, transformers 5.25)."""
    if arch.attention_kind == "mla":
        return float(arch.num_layers * (arch.kv_lora_rank + arch.qk_rope_head_dim) * batch_size * context_len
                     * dtype_bytes)
    return 2.0 * arch.num_layers * arch.kv_dim * batch_size * context_len * dtype_bytes


# --------------------------------------------------------------------------- the estimate


@dataclass
class MemoryEstimate:
    """Bytes by component and by phase; the peak is the largest phase total."""

    breakdown: dict[str, float]
    phases: dict[str, float]
    peak_phase: str
    peak_allocated_bytes: float
    peak_reserved_bytes: float
    device_used_bytes: float
    outside_allocator_bytes: float
    trainable_params: int
    total_params: int
    activation_per_token_per_layer: dict[str, float] = field(default_factory=dict)
    fragmentation_model: str = "fitted"  # how reserved - allocated was predicted: "fitted" or "simulated"
    # the fitted gap's terms of the step's transient tensors alone (logits, activations, eager scores), without
    # those of full fine-tuning's long-lived gradients and states: FSDP CPU offload keeps those on the host
    transient_gap_bytes: float = 0.0


def autocast_weight_copy_bytes(arch: Architecture, inv: Inventory, opts: TrainingOptions) -> dict[str, float]:
    """bf16 copies of fp32 weights that autocast makes and the backward keeps.

    Under autocast a matmul with an fp32 weight runs on a bf16 copy (torch autocast cast policy); the
    matmul saves that copy to compute the input gradient, so it lives until the layer's backward. For
    a trainable leaf weight autocast also caches the copy for the whole forward. So:
    - the head (lm_head, or the tied embedding) when it is fp32: QLoRA (prepare_model_for_kbit_training
      upcasts it), bf16-mixed;
    - every decoder Linear for bf16-mixed full/LoRA: all of them without checkpointing, one layer's
      (the one being recomputed) with it. QLoRA's 4-bit layers dequantize instead (``_qlora_dequant_bytes``).
    """
    out = {"head": 0.0, "all_layers": 0.0, "per_layer": 0.0}
    if not uses_autocast(opts):
        return out
    fp32_head = opts.fp32_upcast or opts.precision == "bf16-mixed"
    if fp32_head and opts.loss != "fused":  # Liger's fused loss multiplies by the head weight itself
        out["head"] = 2.0 * arch.vocab_size * arch.hidden_size
    if opts.precision == "bf16-mixed" and opts.method in ("full", "lora"):
        linear = 2.0 * inv.linear_weight_params
        if opts.checkpointing:
            out["per_layer"] = linear / arch.num_layers
        else:
            out["all_layers"] = linear
    return out


@lru_cache(maxsize=4096)
def simulated_gap_bytes(arch: Architecture, opts: TrainingOptions, ddp: bool = False) -> float:
    """Peak reserved - peak allocated of two training steps replayed through the caching-allocator simulator
    (ftcalc/model/allocsim/allocator.py) from the generated allocation sequence (ftcalc/model/allocsim/sequence.py): the blocks the
    allocator holds but cannot reuse, mostly N x vocab loss buffers whose segments were split by long-lived
    gradients and optimizer states (docs/notes/allocator.md). The second step is the steady state on every
    recorded trace (data/traces). 0.01-0.2 s per configuration, cached. ``ddp``: one rank of
    DistributedDataParallel (its parameter broadcast, the one bucket of all gradients during the first step,
    the buckets rebuilt in gradient-ready order at the second: alloc_sequence.step_sequence)."""
    from types import SimpleNamespace

    from ftcalc.model.allocsim.sequence import simulate_training

    return float(simulate_training(SimpleNamespace(arch=arch), opts, steps=2, ddp=ddp).gap)


def estimate_memory(arch: Architecture, inv: Inventory, opts: TrainingOptions,
                    coeffs: Coefficients | None = None, gpu_memory_bytes: float | None = None,
                    transformers_version: str | None = None, fragmentation: str = "fitted") -> MemoryEstimate:
    """Estimate peak allocated, reserved and device-used bytes for one training step.

    Args:
        arch: normalized architecture (catalog).
        inv: parameter inventory of ``arch``.
        opts: training options.
        coeffs: fitted coefficients (defaults to data/coefficients.json).
        gpu_memory_bytes: when given, the caching allocator cannot reserve more than the GPU holds:
            past that it frees cached blocks and retries (CUDACachingAllocator), so the predicted
            reserved is capped there while the allocation still fits.
        fragmentation: ``fitted`` (the fitted gap terms below: microseconds, used for sweeps and as the
            basis of the multi-GPU model) or ``simulated`` (full fine-tuning that ``simulation_supported``
            covers: the caching-allocator simulation, ``simulated_gap_bytes``; otherwise fitted).
    """
    c = coeffs or load_coefficients()
    if fragmentation not in ("fitted", "simulated"):
        raise InvalidArgumentError(f"fragmentation '{fragmentation}': expected fitted or simulated")
    if opts.method == "qlora" and opts.precision == "32-true":
        from ftcalc.validation import param

        raise InvalidArgumentError(f"{param('precision')} 32-true with {param('method')} qlora: QLoRA computes in "
                                   "bf16; use bf16-true")
    quant = arch.quantization
    refusal = checkpoint_refusal(quant, opts.method, opts.precision)
    if refusal:
        raise InvalidArgumentError(refusal)
    opts = checkpoint_options(quant, opts)
    w = weights_bytes(inv, opts, quant)
    w["weights"] += vision_weight_bytes(arch, opts)
    grads = gradient_bytes(inv, opts)
    st = optimizer_state_bytes(inv, opts)
    step_tmp = optimizer_step_transient_bytes(inv, opts)
    v_lora = vision_lora_params(arch, opts)
    if v_lora:  # the vision tower's adapters: the same per-parameter cost as the decoder's (no activations: text only)
        f = 1.0 + v_lora / max(lora_params(inv, opts), 1)
        w["lora_adapters"] *= f
        grads *= f
        st = {k: v * f for k, v in st.items()}
        step_tmp *= f
    attn = resolve_attention(arch, opts, transformers_version)
    terms = activation_terms_per_token(arch, opts, inv, attention=attn)
    per_layer_token = c.activation_scale * sum(terms.values())
    n = opts.tokens_per_step
    layer_act = per_layer_token * n
    ckpt = checkpoint_bytes(arch, opts) if opts.checkpointing else 0.0
    all_act = ckpt if opts.checkpointing else layer_act * arch.num_layers
    # the final norm saves its fp32 input
    head_saved = 4.0 * n * arch.hidden_size
    logits = logits_bytes(arch, opts, c)
    bwd_tmp = backward_transient_bytes(arch, opts, c)
    if attn == "eager":  # softmax backward: fp32 gradient of the probabilities and of the scores
        bwd_tmp += 8.0 * arch.num_heads * opts.seq_len * n
    deq = _qlora_dequant_bytes(inv, opts, quant)
    moe = expert_lora_bytes(inv, opts)
    bwd_tmp += moe["transient"]  # short-lived in one layer's backward
    if not opts.checkpointing:
        all_act += moe["per_layer_saved"] * arch.num_layers
    copies = autocast_weight_copy_bytes(arch, inv, opts)
    # Gradients: none at the start of backward (zero_grad(set_to_none=True)). The head's gradient
    # (full fine-tuning) appears after the three fp32 logits buffers have shrunk to one plus bf16.
    head_grad = (arch.vocab_size * arch.hidden_size * _trainable_bytes_per_param(opts)
                 if opts.method == "full" else 0.0)
    loss_peak = logits if opts.loss == "fused" else max(logits, logits / 2 + head_grad)
    base = {"weights": w["weights"], "lora_adapters": w["lora_adapters"],
            "optimizer_states": st["optimizer_states"], "misc_allocated": c.fixed_allocated_bytes}
    # Gradient accumulation: zero_grad runs once per optimizer step, so from the second micro-batch on the
    # gradients of the earlier ones are alive through the forward pass and the loss.
    accum_grads = grads if opts.gradient_accumulation_steps > 1 else 0.0
    if opts.checkpointing:
        # checkpoints stay while layer by layer is recomputed; gradients accumulate
        bwd_parts = {"activations": ckpt + layer_act, "gradients": grads, "backward_transient": bwd_tmp + deq,
                     "autocast_weight_copies": copies["head"] + copies["per_layer"]}
    elif accum_grads:
        bwd_parts = {"activations": all_act + copies["all_layers"], "gradients": grads,
                     "backward_transient": bwd_tmp + deq, "autocast_weight_copies": copies["head"]}
    else:
        # saved activations are freed as gradients are allocated: the larger end dominates
        bwd_parts = ({"activations": all_act + copies["all_layers"]} if all_act + copies["all_layers"] >= grads
                     else {"gradients": grads})
        bwd_parts.update({"backward_transient": bwd_tmp + deq, "autocast_weight_copies": copies["head"]})
    # Full fine-tuning ends its backward with the embedding's: a dense V x h gradient (in the weights' dtype)
    # through an fp32 buffer of (N/10 + min(N, V)) x h (alloc_sequence.py, traces t-*); with tied embeddings
    # the head's gradient is already waiting for the same weight, and autograd sums the two into a third
    # V x h tensor before dropping them (trace t-sgd1: three V x h blocks alive at once, the run's peak with
    # SGD, which has no optimizer-step temporaries to peak later)
    emb_tmp = 0.0
    if opts.method == "full":
        emb_tmp = 4.0 * (n / 10.0 + min(n, arch.vocab_size)) * arch.hidden_size
        if inv.tied_embeddings:  # the buffer beside the new gradient, then the sum beside both
            v_h = arch.vocab_size * arch.hidden_size * _trainable_bytes_per_param(opts)
            emb_tmp = max(emb_tmp + v_h, 2.0 * v_h)
    phase_parts = {
        "loss_backward": {**base, "activations": all_act + head_saved, "logits_and_loss": loss_peak,
                          "gradients": accum_grads,
                          "autocast_weight_copies": copies["head"] + copies["all_layers"], "backward_transient": deq},
        "layer_backward": {**base, **bwd_parts},
        "embedding_backward": {**base, "gradients": grads, "backward_transient": emb_tmp},
        "optimizer_step": {**base, "gradients": grads, "optimizer_step_transient": step_tmp},
    }
    phases = {k: sum(v.values()) for k, v in phase_parts.items()}
    peak_phase = max(phases, key=phases.get)  # type: ignore[arg-type]
    peak = phases[peak_phase]
    # Caching-allocator fragmentation (fitted; CUDACachingAllocator never merges blocks of different
    # segments): freed logits-sized blocks that later requests of other sizes cannot reuse, and in full
    # fine-tuning without checkpointing, gradients that cannot take the activations' freed blocks.
    logits_fp32 = 0.0 if opts.loss == "fused" else 4.0 * n * arch.vocab_size
    # the step's transient tensors (loss buffers, activations, eager scores); full fine-tuning adds its own terms
    transient_gap = c.reserved_gap_fixed + c.reserved_gap_per_logits_byte * logits_fp32 + c.reserved_gap_per_layer_byte * layer_act
    if attn == "eager":
        transient_gap += c.reserved_gap_eager_scores * 4.0 * opts.batch_size * arch.num_heads * opts.seq_len ** 2
    gap = transient_gap
    if opts.method == "full" and not opts.checkpointing:
        # gradients allocated in backward as activations are freed can reuse a freed activation block
        # only when they are not larger than it. The share of gradient bytes in tensors larger than an MLP
        # activation block of a reference 2048-token batch is a property of the model's shapes; taking it
        # at a fixed reference (not at this batch) keeps the estimate monotone in batch and length.
        p_bytes = _trainable_bytes_per_param(opts)
        block = 2048 * arch.intermediate_size * linear_out_bytes_per_element(opts)
        big = sum(numel * cnt for numel, cnt in _param_sizes(inv, opts) if numel * p_bytes > block) * p_bytes
        share = big / grads if grads else 0.0
        gap += c.reserved_gap_nockpt_grads * share * min(all_act, grads)
    if opts.method == "full" and arch.tie_word_embeddings and opts.checkpointing:
        # empirical (5 runs): full fine-tuning of tied-embedding models holds 1-4 extra fp32 logits blocks;
        # the embedding's second gradient (embedding backward, accumulated into the head's) is the suspect
        gap += c.reserved_gap_tied_full_logits * logits_fp32
    # The pool peaks at some phase with that phase's fragmentation: at the optimizer step the logits
    # blocks of the loss are still cached; at the loss the previous step's optimizer temporaries are
    # cached blocks too small for the logits buffers. Reserved is the largest phase total (a max of
    # terms that each grow with batch and length, so the estimate stays monotone).
    phase_gap = {
        "loss_backward": gap + c.reserved_gap_cached_step_tmp * min(step_tmp, logits),
        "layer_backward": gap,
        "embedding_backward": gap,
        "optimizer_step": gap + c.reserved_gap_optimizer_logits * logits,
    }
    reserved = max(phases[k] * (1 + c.reserved_gap_fraction) + phase_gap[k] for k in phases)
    frag_model = "fitted"
    if fragmentation == "simulated" and simulation_supported(arch, opts, attn):
        reserved = peak + simulated_gap_bytes(arch, opts.model_copy(update={"num_gpus": 1}))
        frag_model = "simulated"
    outside = c.context_bytes + c.paged_resident_fraction * st["optimizer_states_paged"]
    if gpu_memory_bytes is not None:
        reserved = max(peak, min(reserved, gpu_memory_bytes - outside))
    # the breakdown is taken at the peak: its allocated parts sum to the peak allocated, and with the
    # fragmentation and the memory outside the allocator to the device used
    order = ("weights", "lora_adapters", "gradients", "optimizer_states", "optimizer_step_transient", "activations",
             "logits_and_loss", "backward_transient", "autocast_weight_copies", "misc_allocated")
    parts = phase_parts[peak_phase]
    breakdown = {k: float(parts.get(k, 0.0)) for k in order}
    breakdown["allocator_fragmentation"] = reserved - peak
    breakdown["cuda_context"] = c.context_bytes
    breakdown["paged_optimizer_states"] = c.paged_resident_fraction * st["optimizer_states_paged"]
    return MemoryEstimate(
        breakdown=breakdown,
        phases=phases,
        peak_phase=peak_phase,
        peak_allocated_bytes=peak,
        peak_reserved_bytes=reserved,
        device_used_bytes=reserved + outside,
        outside_allocator_bytes=outside,
        trainable_params=trainable_params(inv, opts) + vision_lora_params(arch, opts),
        total_params=inv.total_params + (arch.vision.params if arch.vision else 0),
        activation_per_token_per_layer=terms,
        fragmentation_model=frag_model,
        transient_gap_bytes=transient_gap,
    )

