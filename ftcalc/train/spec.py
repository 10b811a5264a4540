"""The training spec: one versioned, validated file that says what ``ftcalc run`` trains and how.

    ftcalc plan --model tiny-llama --method qlora --dataset data/samples/alpaca_sample.jsonl \\
        --max-steps 4 --device cpu -o spec.yaml          # writes it (ftcalc/train/plan.py)
    ftcalc run spec.yaml --output-dir run/               # runs it (ftcalc/train/runner.py)
    ftcalc schema                                        # its JSON Schema

Key names follow what users know from axolotl and TRL where one exists (``base_model``,
``micro_batch_size``, ``gradient_accumulation_steps``, ``sequence_len``, ``lora_r``, ``val_set_size``,
``sample_packing``, ``lr_scheduler``, ``save_total_limit``, the FSDP2 keys of accelerate), and the
memory-relevant options reuse the names of :class:`ftcalc.model.options.TrainingOptions` so that the
estimator and the executor read the same words. Unknown keys are rejected with the key named; a spec
written by a newer ``spec_version`` is refused rather than half-understood.

Relative paths in a spec file (dataset, tokenizer, model folder, output dir) are relative to the
folder holding the spec file, so a spec and its data travel together (SkyPilot ``workdir``).

This module imports pydantic and yaml only: the planner side never imports torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ftcalc.errors import FtcalcError
from ftcalc.model.options import OPTIMIZERS, TrainingOptions, make_options
from ftcalc.tables.inventory import DEFAULT_LORA_TARGETS

__all__ = [
    "SPEC_VERSION", "SpecError", "SpecVersionError", "TrainingSpec", "ModelSection", "LoraSection",
    "DataSection", "TrainingSection", "HardwareSection", "FSDPSettings", "DistributionSection",
    "OutputSection", "Predicted", "load_spec", "spec_from_dict", "dump_spec", "save_spec", "resolve_path",
    "spec_json_schema",
    "DECODER_LAYER_CLASSES",
]

SPEC_VERSION = 1  # bump when a key changes meaning or disappears; readers refuse newer versions


class SpecError(FtcalcError):
    """A spec file that cannot be read or does not validate (the key and the problem are named)."""


class SpecVersionError(SpecError):
    """A spec written by a newer ftcalc than this one (its spec_version is above SPEC_VERSION)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ModelSection(_Section):
    """What to fine-tune."""

    base_model: str = Field(description="catalog id or alias (`ftcalc models`), a local folder with config.json "
                                        "(and weights for init: pretrained), or a Hugging Face hub id")
    init: Literal["pretrained", "random"] = Field(
        "pretrained", description="pretrained: load the weights; random: build from the config with random "
                                  "weights (smoke runs, memory and speed checks: nothing downloaded)")
    tokenizer: str | None = Field(
        None, description="tokenizer folder or hub id; null: the one shipped for a catalog entry "
                          "(data/tokenizers/<alias>), else the base_model's own")


class LoraSection(_Section):
    """LoRA / QLoRA settings (names as in TrainingOptions; axolotl's lora_target_modules is accepted)."""

    lora_r: int = Field(16, gt=0, description="LoRA rank")
    lora_alpha: float = Field(32, gt=0, description="LoRA scaling numerator (scale = alpha / r)")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapter input")
    lora_targets: list[str] = Field(list(DEFAULT_LORA_TARGETS), description="decoder Linear names, or all-linear",
                                    validation_alias="lora_target_modules")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="QLoRA 4-bit data type (bitsandbytes)")
    double_quant: bool = Field(True, description="QLoRA: quantize the quantization constants too")

    @field_validator("lora_targets", mode="before")
    @classmethod
    def _targets(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = list(DEFAULT_LORA_TARGETS) if v.strip() in ("all-linear", "all") else [
                t.strip() for t in v.split(",") if t.strip()]
        if not v:
            raise ValueError("empty; use all-linear or a list such as [q_proj, v_proj]")
        return list(v)


class DataSection(_Section):
    """The training data: one JSONL file, one example per line."""

    path: str = Field(description="JSONL file; relative paths are relative to the spec file's folder")
    format: Literal["alpaca", "chat", "text"] = Field(
        description="alpaca: {instruction, input, output} in the Stanford Alpaca prompt; chat: {messages: "
                    "[{role, content}...]} rendered with the tokenizer's chat template; text: {text}")
    val_set_size: float = Field(0.0, ge=0, description="validation split: a fraction (< 1) or a number of rows "
                                                      "(>= 1), taken after a seeded shuffle (axolotl's name)")
    sample_packing: bool = Field(False, description="concatenate examples (each ending in EOS) and cut them into "
                                                    "sequence_len chunks; attention crosses example boundaries",
                                 validation_alias="packing")
    train_on: Literal["all", "completion"] = Field(
        "all", description="all: every token trains, prompt included (axolotl train_on_inputs: true); completion: "
                           "only the Alpaca response or the chat's assistant turns (TRL completion_only_loss / "
                           "assistant_only_loss, axolotl train_on_inputs: false); no effect on memory or speed")
    on_bad_line: Literal["error", "skip"] = Field(
        "error", description="a malformed line (not JSON, missing fields, empty): stop naming file:line, or skip "
                             "it and report how many were skipped")


class TrainingSection(_Section):
    """Hyper-parameters (HF TrainingArguments / axolotl names)."""

    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    num_epochs: float = Field(1.0, gt=0, description="used when max_steps is null")
    max_steps: int | None = Field(None, gt=0, description="optimizer steps; overrides num_epochs")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping; null: none")
    seed: int = Field(42, description="model init, data order, dropout")
    eval_steps: int | None = Field(None, gt=0, description="validation loss every N steps (and at the end); "
                                                           "null: at the end only")
    logging_steps: int = Field(1, gt=0)


class HardwareSection(_Section):
    gpu: str | None = Field(None, description="GPU slug or alias the prediction is for (`ftcalc gpus`); null on CPU")
    num_gpus: int = Field(1, gt=0, description="GPUs per node (device cpu: processes per node, DDP over gloo)")
    num_nodes: int = Field(1, gt=0)
    device: Literal["cuda", "cpu"] = "cuda"

    @property
    def world_size(self) -> int:
        return self.num_gpus * self.num_nodes


class FSDPSettings(_Section):
    """FSDP2 settings (accelerate's unprefixed FSDP2 keys, docs/source/concept_guides/fsdp1_vs_fsdp2.md)."""

    fsdp_version: Literal[2] = 2
    reshard_after_forward: bool = Field(True, description="true: FULL_SHARD; false: SHARD_GRAD_OP")
    offload_params: bool = False
    state_dict_type: Literal["FULL_STATE_DICT", "SHARDED_STATE_DICT"] = "FULL_STATE_DICT"
    auto_wrap_policy: Literal["TRANSFORMER_BASED_WRAP"] = "TRANSFORMER_BASED_WRAP"
    cpu_ram_efficient_loading: bool = False


class DistributionSection(_Section):
    strategy: Literal["single", "ddp", "fsdp"] = Field(
        "single", description="single: one device in-process; ddp: data parallel (adapter methods); "
                              "fsdp: fully sharded (full fine-tuning of large models; sharded QLoRA)")
    fsdp: FSDPSettings = Field(default_factory=FSDPSettings)


class OutputSection(_Section):
    output_dir: str = Field("run", description="`ftcalc run --output-dir` overrides it")
    save_steps: int | None = Field(None, gt=0, description="checkpoint every N optimizer steps; null: only on "
                                                          "SIGTERM (final/ is written at the end either way)")
    save_total_limit: int = Field(2, ge=1, description="complete checkpoints kept (newest first); 2 or more is "
                                                       "safer (torchtitan's rule)")
    merge_adapter: bool = Field(False, description="also write the base model with the adapter merged in")


class Predicted(_Section):
    """What the estimator expects (ftcalc.model.estimator), written by ftcalc plan; per GPU."""

    device_used_bytes: int | None = Field(None, description="nvidia-smi's view at the peak (CUDA context included)")
    peak_allocated_bytes: int | None = None
    peak_reserved_bytes: int | None = None
    tokens_per_second: float | None = Field(None, description="per GPU, all sequence positions (padding included)")
    total_steps: int | None = None
    total_tokens: int | None = Field(None, description="sequence positions processed by all GPUs in the run")
    hours: float | None = None
    usd_per_hour: float | None = None
    cost_usd: float | None = None
    provider: str | None = None
    instance_type: str | None = None
    gpu: str | None = None
    coefficients: str | None = None
    ftcalc_version: str | None = None


class TrainingSpec(_Section):
    """A complete fine-tuning job. ``ftcalc schema`` prints this as JSON Schema."""

    spec_version: int = Field(SPEC_VERSION, description="the spec format's version; readers refuse newer ones")
    model: ModelSection
    method: Literal["full", "lora", "qlora"] = Field(
        "lora", description="full: every weight trains; lora: adapters on a bf16 base; qlora: adapters on a 4-bit base")
    lora: LoraSection = Field(default_factory=LoraSection, description="used by lora and qlora")
    precision: Literal["bf16-true", "bf16-mixed", "32-true"] = Field(
        "bf16-true", description="bf16-true: bf16 weights + bf16 autocast; bf16-mixed: fp32 weights + autocast")
    optimizer: Literal[OPTIMIZERS] = Field("adamw_torch", description="see ftcalc/model/options.py")  # type: ignore[valid-type]
    gradient_checkpointing: bool | None = Field(None, description="null: on for lora/qlora, off for full")
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field(
        "auto", description="auto: what transformers selects for the model")
    loss: Literal["standard", "fused"] = Field(
        "standard", description="standard: the model's causal-LM loss; fused: Liger fused linear cross-entropy (CUDA)")
    sequence_len: int = Field(2048, gt=0, description="tokens per sequence; longer examples are truncated, "
                                                      "shorter ones right-padded")
    micro_batch_size: int = Field(1, gt=0, description="sequences per forward pass per GPU")
    gradient_accumulation_steps: int = Field(1, gt=0, description="micro-batches per optimizer step")
    data: DataSection
    training: TrainingSection = Field(default_factory=TrainingSection)
    hardware: HardwareSection = Field(default_factory=HardwareSection)
    distribution: DistributionSection = Field(default_factory=DistributionSection)
    output: OutputSection = Field(default_factory=OutputSection)
    predicted: Predicted = Field(default_factory=Predicted)

    @model_validator(mode="after")
    def _consistent(self) -> TrainingSpec:
        problems = []
        hw, dist = self.hardware, self.distribution
        if hw.device == "cpu":
            if hw.world_size > 1 and dist.strategy != "ddp":
                problems.append("hardware.device cpu with several processes runs DDP over gloo: set "
                                "distribution.strategy ddp (or num_gpus and num_nodes 1)")
            if self.loss == "fused":
                problems.append("loss fused needs a CUDA GPU (Liger kernels); use standard on cpu")
        if dist.strategy == "single" and hw.world_size > 1:
            problems.append(f"distribution.strategy single with {hw.world_size} GPUs: use ddp or fsdp")
        if dist.strategy != "single" and hw.world_size == 1:
            problems.append(f"distribution.strategy {dist.strategy} needs more than one GPU (hardware.num_gpus)")
        if dist.strategy == "fsdp" and self.method == "qlora" and dist.fsdp.offload_params:
            problems.append("distribution.fsdp.offload_params with qlora: the recipe does not offload 4-bit weights; "
                            "set offload_params false")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # ---- derived views -----------------------------------------------------------------------

    def to_options(self) -> TrainingOptions:
        """The estimator/recipe options this spec trains with (same names, one validation)."""
        return make_options(
            method=self.method, seq_len=self.sequence_len, batch_size=self.micro_batch_size,
            gradient_checkpointing=self.gradient_checkpointing, optimizer=self.optimizer,
            precision=self.precision, lora_r=self.lora.lora_r, lora_alpha=self.lora.lora_alpha,
            lora_dropout=self.lora.lora_dropout, lora_targets=tuple(self.lora.lora_targets),
            attention=self.attention, loss=self.loss, quant_type=self.lora.quant_type,
            double_quant=self.lora.double_quant, num_gpus=self.hardware.world_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
        )

    @property
    def global_batch_size(self) -> int:
        """Sequences per optimizer step over all GPUs."""
        return self.micro_batch_size * self.gradient_accumulation_steps * self.hardware.world_size

    def fingerprint(self) -> str:
        """A hash of what decides the training trajectory (model, data, method, batch, schedule, world size).

        Output settings, hardware names and the prediction are left out: a run may be resumed with a
        different save interval or on another GPU model, but not with another learning rate.
        """
        d = self.model_dump(mode="json")
        for k in ("output", "predicted", "distribution"):
            d.pop(k)
        d["hardware"] = {"world_size": self.hardware.world_size}
        d["training"].pop("logging_steps")
        d["training"].pop("eval_steps")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- reading and writing


def _problems(e: ValidationError) -> str:
    out = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            out.append(f"unknown key '{loc}'")
            continue
        msg = err["msg"].replace("Input should be", "expected").replace("Value error, ", "")
        got = err.get("input")
        if err["type"] == "missing":
            out.append(f"'{loc}' is required")
        elif loc:
            shown = repr(got) if not isinstance(got, dict) else "{...}"
            out.append(f"{loc}={shown}: {msg}")
        else:
            out.append(msg)
    return "; ".join(out)


def spec_from_dict(raw: Any, where: str = "spec") -> TrainingSpec:
    """Validate a parsed spec (a dict), refusing newer versions first.

    Raises:
        SpecVersionError: spec_version above this ftcalc's SPEC_VERSION.
        SpecError: anything else, every problem named in one message.
    """
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected a mapping of keys (model, method, data, ...), got {type(raw).__name__}")
    version = raw.get("spec_version")
    if version is None:
        raise SpecError(f"{where}: no spec_version (this ftcalc writes and reads spec_version {SPEC_VERSION})")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SpecError(f"{where}: spec_version={version!r}: expected a positive integer")
    if version > SPEC_VERSION:
        raise SpecVersionError(
            f"{where}: written for spec_version {version}, but this ftcalc reads up to {SPEC_VERSION}: "
            "upgrade ftcalc (pip install -U ftcalc) or write the spec again with this version's `ftcalc plan`"
        )
    try:
        return TrainingSpec.model_validate(raw)
    except ValidationError as e:
        raise SpecError(f"{where}: {_problems(e)}") from None


def load_spec(path: str | Path) -> TrainingSpec:
    """Read a spec from YAML (``yaml.safe_load``) or JSON (by extension ``.json``).

    Relative paths inside stay as written; :func:`resolve_path` resolves them against the spec's folder.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{p}: no such spec file (write one with `ftcalc plan ... -o {p}`)") from None
    except UnicodeDecodeError:
        raise SpecError(f"{p}: not a spec (not UTF-8 text); write one with `ftcalc plan ... -o SPEC.yaml`") from None
    except OSError as e:
        raise SpecError(f"{p}: cannot read ({e.strerror})") from None
    try:
        raw = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise SpecError(f"{p}:{e.lineno}: malformed JSON ({e.msg})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise SpecError(f"{p}{line}: malformed YAML ({getattr(e, 'problem', None) or e})") from None
    return spec_from_dict(raw, where=str(p))


_HEADER = """\
# ftcalc training spec (spec_version {v}). Run it with:  ftcalc run {name} --output-dir {out}
# Reference: docs/executor.md; JSON Schema: ftcalc schema. Relative paths are relative to this file.
"""


def dump_spec(spec: TrainingSpec, fmt: str = "yaml", name: str = "spec.yaml") -> str:
    """The spec as YAML (a header saying how to run it, each key followed by its description) or JSON."""
    d = spec.model_dump(mode="json", by_alias=False)
    if fmt == "json":
        return json.dumps(d, indent=2) + "\n"
    lines = _HEADER.format(v=spec.spec_version, name=name, out=spec.output.output_dir).splitlines()
    _yaml_lines(type(spec), d, 0, lines)
    return "\n".join(lines) + "\n"


def _yaml_lines(model: type[BaseModel], d: dict[str, Any], indent: int, out: list[str]) -> None:
    """Block-style YAML with the field's description as a trailing comment (litgpt's config hub style)."""
    pad = " " * indent
    for key, value in d.items():
        field = model.model_fields[key]
        sub = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) \
            else None
        note = f"  # {field.description}" if field.description else ""
        if sub is not None and isinstance(value, dict):
            out.append(f"{pad}{key}:{note}")
            _yaml_lines(sub, value, indent + 2, out)
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
            text = text.removesuffix("...").strip()  # a bare scalar document ends with '...'
            out.append(f"{pad}{key}: {text}{note}")


def save_spec(spec: TrainingSpec, path: str | Path) -> Path:
    """Write the spec (JSON for a ``.json`` path, else YAML), atomically (temp file then rename)."""
    from ftcalc.safe_write import SPEC_MARKERS, write_text

    p = Path(path)
    text = dump_spec(spec, "json" if p.suffix.lower() == ".json" else "yaml", name=p.name)
    return write_text(p, text, marker=SPEC_MARKERS, force=True, what="spec")


def resolve_path(value: str, spec_path: str | Path | None) -> Path:
    """A path from the spec: absolute as is, relative to the spec file's folder otherwise."""
    p = Path(value).expanduser()
    if p.is_absolute() or spec_path is None:
        return p
    return Path(spec_path).resolve().parent / p


def spec_json_schema() -> dict[str, Any]:
    """JSON Schema of :class:`TrainingSpec` (``ftcalc schema``)."""
    schema = TrainingSpec.model_json_schema(by_alias=False)
    schema["$id"] = f"https://ftcalc.dev/schema/spec-v{SPEC_VERSION}.json"
    schema["title"] = "ftcalc training spec"
    return schema


# --------------------------------------------------------------------------- emitters

# model_type -> the decoder layer class FSDP wraps (transformers/models/<type>/modeling_<type>.py, v5.x)
DECODER_LAYER_CLASSES = {
    "llama": "LlamaDecoderLayer", "mistral": "MistralDecoderLayer", "mixtral": "MixtralDecoderLayer",
    "qwen2": "Qwen2DecoderLayer", "qwen3": "Qwen3DecoderLayer", "gemma": "GemmaDecoderLayer",
    "gemma2": "Gemma2DecoderLayer", "gemma3_text": "Gemma3DecoderLayer", "phi3": "Phi3DecoderLayer",
}


class BlockDumper(yaml.SafeDumper):
    """Multi-line strings (setup, run) as YAML literal blocks, as SkyPilot's own examples write them."""


BlockDumper.add_representer(
    str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))
