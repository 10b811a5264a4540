"""The training options that change memory or speed, shared by the estimator, the profiler and the executor.

One definition, one validation: ``ftcalc estimate``, ``ftcalc profile`` and ``ftcalc run`` take the
same names, so a memory-relevant option cannot exist on one side only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ftcalc.errors import InvalidArgumentError
from ftcalc.validation import MAX_GPUS_PER_NODE, param

__all__ = ["DEFAULTS", "TrainingOptions", "OPTIMIZERS", "PRECISIONS", "METHODS", "ATTENTIONS", "make_options"]

METHODS = ("full", "lora", "qlora")
PRECISIONS = ("bf16-true", "bf16-mixed", "32-true")  # Lightning's names
OPTIMIZERS = (
    "adamw_torch",  # torch.optim.AdamW, foreach implementation (the default)
    "adamw_torch_fused",  # torch.optim.AdamW(fused=True)
    "paged_adamw_32bit",  # bitsandbytes PagedAdamW32bit: states in CUDA unified memory
    "paged_adamw_8bit",  # bitsandbytes PagedAdamW8bit
    "adamw_8bit",  # bitsandbytes AdamW8bit: blockwise 8-bit states
    "sgd",  # torch.optim.SGD, no momentum
    "adafactor",  # transformers.optimization.Adafactor (factored second moment)
)
ATTENTIONS = ("auto", "sdpa", "eager", "flash_attention_2")
LOSSES = ("standard", "fused")  # fused: Liger fused linear cross-entropy (no B*T*V logits)


class TrainingOptions(BaseModel):
    """Everything about a training step that the memory and time models need besides model and GPU.

    Defaults follow the plain Hugging Face recipe: LoRA r=16, alpha=32, dropout 0.05 on the seven
    linear projections; bf16 weights with bf16 autocast; torch AdamW; gradient checkpointing on for
    LoRA/QLoRA and off for full fine-tuning.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    method: Literal["full", "lora", "qlora"] = "lora"
    seq_len: int = Field(2048, gt=0, description="tokens per sequence")
    batch_size: int = Field(1, gt=0, description="micro-batch size (sequences per forward pass per GPU)")
    gradient_accumulation_steps: int = Field(1, gt=0, description="micro-batches per optimizer step")
    gradient_checkpointing: bool | None = None  # None: on for lora/qlora, off for full
    optimizer: Literal[OPTIMIZERS] = "adamw_torch"  # type: ignore[valid-type]
    precision: Literal["bf16-true", "bf16-mixed", "32-true"] = "bf16-true"
    # a rank above 2^16 is wider than any decoder Linear (Llama-3.1-405B's widest, its MLP, is 53,248): a typo
    lora_r: int = Field(16, gt=0, le=65536)
    lora_alpha: float = Field(32, gt=0)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_targets: tuple[str, ...] = ("all-linear",)  # every decoder Linear (peft's "all-linear")
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"
    loss: Literal["standard", "fused"] = "standard"
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    num_gpus: int = Field(1, gt=0, le=MAX_GPUS_PER_NODE, description="GPUs of one node")
    # QLoRA's dtypes, set by the strategy, not by the user (and not recorded: ``exclude``): True on one GPU and
    # under DDP (peft's prepare_model_for_kbit_training upcasts every unquantized parameter to fp32, adapters
    # fp32), False for sharded QLoRA under FSDP (ftcalc.train.recipe.build_model_sharded, as TRL does: bf16
    # embeddings, norms, head and adapters, the 4-bit rows stored in bf16)
    qlora_fp32_upcast: bool = Field(True, exclude=True)

    @field_validator("lora_targets", mode="before")
    @classmethod
    def _split_targets(cls, v: object) -> object:
        if isinstance(v, str):
            v = ("all-linear",) if v.strip() in ("all-linear", "all") else tuple(
                t.strip() for t in v.split(",") if t.strip()
            )
        if not v:
            raise ValueError("lora_targets is empty; use all-linear or a comma list such as q_proj,v_proj")
        return tuple(v)

    @property
    def checkpointing(self) -> bool:
        """Gradient checkpointing after the method default is applied."""
        if self.gradient_checkpointing is None:
            return self.method != "full"
        return self.gradient_checkpointing

    def is_target(self, kind: str) -> bool:
        """Whether LoRA adapts the decoder Linear kind ``kind`` ("all-linear": every decoder Linear, a router
        that is an nn.Linear included, as peft's all-linear does: Llama 4's Llama4Router; routers that are plain
        parameters are not Linear groups and are costed with the experts)."""
        return kind in self.lora_targets or "all-linear" in self.lora_targets

    @property
    def uses_adapters(self) -> bool:
        return self.method in ("lora", "qlora")

    @property
    def fp32_upcast(self) -> bool:
        """QLoRA with peft's fp32 upcast of the unquantized parameters and fp32 adapters (not sharded)."""
        return self.method == "qlora" and self.qlora_fp32_upcast

    @property
    def sharded_qlora(self) -> bool:
        """QLoRA as the FSDP build runs it: bf16 unquantized parameters and adapters (no fp32 upcast)."""
        return self.method == "qlora" and not self.qlora_fp32_upcast

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.batch_size


def make_options(**kwargs: object) -> TrainingOptions:
    """Build :class:`TrainingOptions`, turning validation errors into one ``InvalidArgumentError`` line.

    All problems are reported at once, each naming the option, the bad value and what is valid.
    """
    clean = {k: v for k, v in kwargs.items() if v is not None}
    try:
        return TrainingOptions(**clean)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "options"
            got = err.get("input")
            msg = err["msg"].replace("Input should be", "expected")
            if err["type"] == "finite_number":
                msg = "expected a finite number"
            problems.append(f"{param(loc)}={got!r}: {msg}")
        raise InvalidArgumentError("; ".join(problems)) from None


# The one place the defaults are written: the CLI flags, the API's keyword defaults and the spec read them here.
DEFAULTS = TrainingOptions()
