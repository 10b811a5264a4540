"""Bytes per element and per parameter by precision and method, the 4-bit storage of a quantized Linear, and
the attention implementation transformers selects: the helpers the memory ledger, the time model and the
allocation sequences share.

    from ftcalc.model.units import quantized_linear_bytes, resolve_attention
"""

from __future__ import annotations

import math

from ftcalc.model.options import TrainingOptions
from ftcalc.tables.catalog import Architecture

NF4_BLOCK = 64  # bitsandbytes Params4bit blocksize default (bitsandbytes/nn/modules.py)


DQ_BLOCK = 256  # double quantization: absmax quantized to 8 bit in blocks of 256 (QLoRA paper §3)


def weight_bytes_per_param(opts: TrainingOptions) -> int:
    """bf16 weights for bf16-true; fp32 for bf16-mixed (fp32 master weights) and 32-true."""
    return 2 if opts.precision == "bf16-true" else 4


def unquantized_bytes_per_param(opts: TrainingOptions) -> int:
    """Element size of a parameter bitsandbytes leaves unquantized (embeddings, LM head, norms, MoE experts):
    fp32 under QLoRA (``prepare_model_for_kbit_training`` upcasts them), else the weight dtype (sharded QLoRA:
    bf16, not upcast)."""
    if opts.method == "qlora":
        return 4 if opts.fp32_upcast else 2
    return weight_bytes_per_param(opts)


def uses_autocast(opts: TrainingOptions) -> bool:
    return opts.precision != "32-true"


def residual_bytes_per_element(opts: TrainingOptions) -> int:
    """Bytes per element of the residual stream: the embedding output's dtype.

    QLoRA's prepare_model_for_kbit_training upcasts the embeddings to fp32 (peft/utils/other.py), so
    its hidden states are fp32 even with bf16 compute; autocast does not cast embeddings or adds. Sharded
    QLoRA keeps them bf16.
    """
    if opts.method == "qlora":
        return unquantized_bytes_per_param(opts)
    return weight_bytes_per_param(opts)


def linear_out_bytes_per_element(opts: TrainingOptions) -> int:
    """Bytes per element of a decoder Linear's output.

    Under autocast a plain Linear returns bf16; bitsandbytes Linear4bit casts its output back to its
    input dtype (bitsandbytes/nn/modules.py Linear4bit.forward: ``out.to(inp_dtype)``).
    """
    if not uses_autocast(opts):
        return 4
    return residual_bytes_per_element(opts) if opts.method == "qlora" else 2


def quantized_linear_bytes(numel: int, double_quant: bool = True) -> float:
    """NF4/FP4 storage of one weight tensor: 4-bit data plus per-block absmax constants.

    QLoRA paper (arXiv 2305.14314 §3): blocksize 64 with fp32 absmax costs 32/64 bits per parameter;
    double quantization stores absmax in 8 bit (blocks of 256 with an fp32 second-level absmax).
    """
    data = numel / 2
    blocks = math.ceil(numel / NF4_BLOCK)
    if double_quant:
        absmax = blocks * 1 + math.ceil(blocks / DQ_BLOCK) * 4 + 256 * 4  # uint8 + fp32 absmax2 + code
    else:
        absmax = blocks * 4
    return data + absmax


def installed_transformers() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("transformers")
    except PackageNotFoundError:
        return None


def resolve_attention(arch: Architecture, opts: TrainingOptions, transformers_version: str | None = None) -> str:
    """The attention implementation the recipe really runs.

    ``auto`` is what transformers selects: SDPA where the model class supports it, else eager. Gemma 2
    is the exception that moved: ``Gemma2PreTrainedModel._supports_sdpa`` is True up to transformers
    5.20 and False from 5.21 (soft-capping), checked in the released wheels. With no transformers
    installed (a planner-only machine) the newest behaviour is assumed.
    """
    if opts.attention != "auto":
        return opts.attention
    if arch.model_type == "gemma2":
        v = transformers_version or installed_transformers()
        if v:
            try:
                major, minor = (int(x) for x in v.split(".")[:2])
                if (major, minor) < (5, 21):
                    return "sdpa"
            except ValueError:
                pass
        return "eager"
    return arch.default_attention
