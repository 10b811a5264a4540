"""Pre-quantized checkpoints: a config.json's ``quantization_config`` read into a :class:`QuantScheme`, and
the bytes one quantized Linear occupies on the GPU in that format (packed weights, scales, zero points).

    from ftcalc.tables.quantization import parse_quantization
    q = parse_quantization(cfg)          # None for an unquantized checkpoint
    q.linear_bytes(in_features, out_features)

Each format's storage is the set of tensors its library registers for one Linear of ``in_features`` (K)
-> ``out_features`` (N); the source is named next to each formula. Nothing here imports torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from ftcalc.errors import ConfigError

__all__ = ["QuantScheme", "parse_quantization", "module_path", "FORMATS"]

# format -> (what transformers does with it when training, whether its memory was measured by ftcalc)
FORMATS = ("bnb-4bit", "bnb-8bit", "gptq", "awq", "fp8", "mxfp4")

# bitsandbytes Params4bit default blocksize (bitsandbytes/nn/modules.py, 0.4x) and the double-quantization
# block of the absmax constants (QLoRA paper arXiv 2305.14314 §3; bitsandbytes/functional.py quantize_4bit
# with compress_statistics=True: absmax quantized blockwise by 256 with an fp32 second-level absmax, plus
# the 256-entry fp32 code table)
BNB4_BLOCK = 64
BNB4_DQ_BLOCK = 256


@dataclass(frozen=True)
class QuantScheme:
    """A checkpoint's quantization as its config.json declares it."""

    format: str  # one of FORMATS
    bits: int
    group_size: int = 0  # GPTQ/AWQ group along in_features; -1/0: one group per row
    zero_point: bool = True  # AWQ: asymmetric with packed zero points
    double_quant: bool = False  # bnb 4-bit: compressed absmax statistics
    quant_type: str = ""  # bnb 4-bit: nf4 | fp4
    weight_block_size: tuple[int, int] | None = None  # FP8: (rows of out, cols of in) per fp32 scale
    not_converted: tuple[str, ...] = ()  # modules_to_not_convert / ignored_layers / llm_int8_skip_modules
    raw_method: str = ""

    def converts(self, path: str) -> bool:
        """Whether the module at ``path`` (``model.layers.0.self_attn.q_proj``) is quantized.

        The rule of transformers' ``should_convert_module`` (transformers/quantizers/quantizers_utils.py,
        v5.25): a pattern skips the module when it matches from the start up to a module boundary (as a
        regex, so ``model.layers.*.self_attn`` skips every attention projection) or is a suffix of it."""
        boundary = r"(?:(?<=\.)|(?=\.|$))"
        return not any(re.match(rf"(?:{key}){boundary}", path) or path.endswith(key) for key in self.not_converted)

    def linear_bytes(self, in_features: int, out_features: int) -> float:
        """GPU bytes of one quantized Linear weight of ``in_features`` (K) -> ``out_features`` (N), its
        quantization constants included (the bias, if any, stays in its own dtype and is counted elsewhere)."""
        k, n = in_features, out_features
        numel = k * n
        if self.format == "bnb-4bit":
            # bitsandbytes Linear4bit / Params4bit (bitsandbytes/nn/modules.py, functional.quantize_4bit):
            # two 4-bit codes per uint8, one absmax per block of 64; compressed statistics store the absmax
            # as uint8 with an fp32 absmax per 256 blocks and the 256-entry fp32 code
            blocks = math.ceil(numel / BNB4_BLOCK)
            absmax = (blocks + math.ceil(blocks / BNB4_DQ_BLOCK) * 4 + 256 * 4) if self.double_quant else blocks * 4
            return numel / 2 + absmax
        if self.format == "bnb-8bit":
            # bitsandbytes Linear8bitLt / Int8Params (bitsandbytes/nn/modules.py): CB int8 [N, K] and SCB,
            # one fp32 absmax per output row
            return numel + 4.0 * n
        if self.format == "gptq":
            # GPTQ QuantLinear as auto-gptq (auto_gptq/nn_modules/qlinear/*.py) and gptqmodel register it:
            # qweight int32 [K * bits / 32, N], qzeros int32 [G, N * bits / 32], scales fp16 [G, N],
            # g_idx int32 [K], with G = ceil(K / group_size) groups (group_size -1: one group)
            g = math.ceil(k / self.group_size) if self.group_size > 0 else 1
            return numel * self.bits / 8 + g * n * self.bits / 8 + g * n * 2 + 4.0 * k
        if self.format == "awq":
            # AutoAWQ WQLinear_GEMM (awq/modules/linear/gemm.py): qweight int32 [K, N * bits / 32],
            # qzeros int32 [G, N * bits / 32], scales fp16 [G, N]; zero_point false (symmetric) stores no zeros
            g = math.ceil(k / self.group_size) if self.group_size > 0 else 1
            zeros = g * n * self.bits / 8 if self.zero_point else 0.0
            return numel * self.bits / 8 + zeros + g * n * 2
        if self.format == "fp8":
            # transformers FP8Linear (transformers/integrations/finegrained_fp8.py, v5.25): weight
            # float8_e4m3fn [N, K] and weight_scale_inv fp32 [ceil(N / b0), ceil(K / b1)]; without a block
            # size one fp32 scale per tensor
            if self.weight_block_size:
                b0, b1 = self.weight_block_size
                return numel + 4.0 * math.ceil(n / b0) * math.ceil(k / b1)
            return numel + 4.0
        if self.format == "mxfp4":
            # OCP Microscaling MXFP4 as gpt-oss ships its experts (transformers/integrations/mxfp4.py,
            # *_blocks uint8 [..., K / 32, 16] and *_scales uint8 [..., K / 32]): 32 FP4 (E2M1) values in
            # 16 bytes share one E8M0 scale byte: 4.25 bits per weight
            return numel / 2 + math.ceil(k / 32) * n
        raise ConfigError(f"quantization format '{self.format}' has no storage rule")

    def bytes_per_weight(self, in_features: int, out_features: int) -> float:
        return self.linear_bytes(in_features, out_features) / (in_features * out_features)

    @property
    def label(self) -> str:
        if self.format.startswith("bnb"):
            return f"bitsandbytes {self.bits}-bit" + (f" {self.quant_type}" if self.quant_type else "")
        extra = f", group {self.group_size}" if self.format in ("gptq", "awq") else ""
        if self.weight_block_size:
            extra = f", blocks {self.weight_block_size[0]}x{self.weight_block_size[1]}"
        return f"{self.format.upper()} {self.bits}-bit{extra}"


def module_path(kind: str) -> str:
    """A representative transformers module path for an inventory kind (for ``QuantScheme.converts``)."""
    if kind in ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"):
        return f"model.layers.0.self_attn.{kind}"
    if kind in ("gate_proj", "up_proj", "down_proj", "gate_up_proj"):
        return f"model.layers.0.mlp.{kind}"
    if kind == "experts":
        return "model.layers.0.mlp.experts"
    if kind == "router":
        return "model.layers.0.mlp.router"
    if kind == "embed_tokens":
        return "model.embed_tokens"
    return kind


def _int(q: dict[str, Any], key: str, default: int, where: str) -> int:
    v = q.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{where}: quantization_config '{key}' must be an integer, got {v!r}")
    return v


def _patterns(q: dict[str, Any], where: str) -> tuple[str, ...]:
    out: list[str] = []
    for key in ("modules_to_not_convert", "ignored_layers", "llm_int8_skip_modules", "ignore"):
        v = q.get(key)
        if v is None:
            continue
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ConfigError(f"{where}: quantization_config '{key}' must be a list of module names, got {v!r}")
        out += v
    return tuple(dict.fromkeys(out))


def parse_quantization(cfg: dict[str, Any], where: str = "config") -> QuantScheme | None:
    """Read ``cfg['quantization_config']`` (None: an unquantized checkpoint).

    Raises:
        ConfigError: a quantization method ftcalc has no storage rule for, or a malformed field.
    """
    q = cfg.get("quantization_config")
    if q is None:
        return None
    if not isinstance(q, dict):
        raise ConfigError(f"{where}: quantization_config must be a JSON object, got {type(q).__name__}")
    method = str(q.get("quant_method") or "").lower()
    nots = _patterns(q, where)
    if method == "bitsandbytes" or (not method and (q.get("load_in_4bit") or q.get("load_in_8bit"))):
        if q.get("load_in_4bit") or q.get("_load_in_4bit"):
            return QuantScheme("bnb-4bit", 4, double_quant=bool(q.get("bnb_4bit_use_double_quant", False)),
                               quant_type=str(q.get("bnb_4bit_quant_type") or "fp4"), not_converted=nots,
                               raw_method="bitsandbytes")
        if q.get("load_in_8bit") or q.get("_load_in_8bit"):
            return QuantScheme("bnb-8bit", 8, not_converted=nots, raw_method="bitsandbytes")
        raise ConfigError(f"{where}: bitsandbytes quantization_config has neither load_in_4bit nor load_in_8bit")
    if method in ("gptq", "awq"):
        bits = _int(q, "bits", _int(q, "w_bit", 4, where), where)
        group = _int(q, "group_size", _int(q, "q_group_size", 128, where), where)
        if bits not in (2, 3, 4, 8):
            raise ConfigError(f"{where}: {method} bits {bits}: expected 2, 3, 4 or 8")
        if group == 0 or group < -1:
            raise ConfigError(f"{where}: {method} group_size {group}: expected -1 or a positive integer")
        return QuantScheme(method, bits, group_size=group, zero_point=bool(q.get("zero_point", True)),
                           not_converted=nots, raw_method=method)
    if method == "fp8":
        block = q.get("weight_block_size")
        wbs = None
        if block is not None:
            if (not isinstance(block, list) or len(block) != 2
                    or not all(isinstance(b, int) and not isinstance(b, bool) and b > 0 for b in block)):
                raise ConfigError(f"{where}: fp8 weight_block_size {block!r}: expected two positive integers")
            wbs = (block[0], block[1])
        return QuantScheme("fp8", 8, weight_block_size=wbs, not_converted=nots, raw_method=method)
    if method == "mxfp4":
        return QuantScheme("mxfp4", 4, not_converted=nots, raw_method=method)
    known = "bitsandbytes (load_in_4bit / load_in_8bit), gptq, awq, fp8, mxfp4"
    raise ConfigError(f"{where}: quantization_config quant_method '{method or '?'}' has no storage rule in ftcalc "
                      f"(known: {known}); estimate the unquantized base model instead")
