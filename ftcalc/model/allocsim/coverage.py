"""Which configurations the allocation sequences model op by op (the rest use the fitted fragmentation):
model families, optimizers and attention implementations whose allocator traces the sequences replay.

    from ftcalc.model.allocsim.coverage import simulation_supported
"""

from __future__ import annotations

from ftcalc.model.options import TrainingOptions
from ftcalc.tables.catalog import Architecture

# The allocator simulation (ftcalc/model/allocsim/sequence.py) covers what its sequence generator models: full
# fine-tuning of decoders of these families with SDPA attention, the standard loss, one micro-batch per
# step, bf16 weights (bf16-true) or fp32 weights under autocast (bf16-mixed), and the optimizers below.
SIMULATED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma2")


SIMULATED_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit",
                        "adafactor", "sgd")


def simulation_supported(arch: Architecture, opts: TrainingOptions, attention: str) -> bool:
    """Whether the caching-allocator simulation models this configuration (else the fitted gap is used)."""
    return (opts.method == "full" and opts.precision in ("bf16-true", "bf16-mixed")
            and sequence_ops_covered(arch, opts, attention))


def sequence_ops_covered(arch: Architecture, opts: TrainingOptions, attention: str) -> bool:
    """What every generated allocation sequence (alloc_sequence, alloc_sequence_fsdp, alloc_sequence_adapter)
    needs whatever the method: a decoder type, attention, loss and optimizer its op model covers, one
    micro-batch per step, no experts."""
    return (arch.model_type in SIMULATED_MODEL_TYPES and attention == "sdpa" and opts.loss == "standard"
            and opts.gradient_accumulation_steps == 1 and opts.optimizer in SIMULATED_OPTIMIZERS
            and not arch.num_experts)
