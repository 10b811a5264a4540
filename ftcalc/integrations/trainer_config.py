"""Read the config of the trainer people actually run and map it to ftcalc's options.

    ftcalc estimate --from qlora.yml --gpu rtx-4090           # axolotl
    ftcalc estimate --from llama3_lora_sft.yaml --gpu a10g    # LLaMA-Factory
    ftcalc estimate --from sft_config.json --from adapter_config.json --gpu l4   # TRL SFTConfig + peft LoraConfig
    ftcalc fit --from training_args.json --minimize gpu       # transformers TrainingArguments.to_dict()

The format is detected from the keys (:func:`detect_format`). Every key that changes memory or speed is either
mapped to a :class:`ftcalc.model.options.TrainingOptions` field, or named in ``not_modelled`` with the reason; keys
known to change neither (logging, saving, learning rate, data paths) are accepted silently, and every other key
is listed in ``unknown``. Nothing in a file is executed: YAML goes through ``yaml.safe_load``.

Where each tool's key names and defaults come from (read from their source, version or commit named):

- transformers 5.25.0 ``src/transformers/training_args.py`` (``TrainingArguments`` fields; ``optim`` defaults to
  ``adamw_torch_fused`` when torch >= 2.8, else ``adamw_torch``; ``gradient_checkpointing`` is the deprecated alias
  of ``activation_checkpointing``, whose kwargs default to ``{"use_reentrant": False}`` in
  ``modeling_utils.PreTrainedModel._activation_checkpointing_enable``; ``per_device_train_batch_size`` defaults
  to 8). ``from_pretrained``'s ``dtype`` defaults to ``"auto"``: the checkpoint's dtype.
- TRL ``trl/trainer/sft_config.py`` (huggingface/trl at commit 016013e8): ``max_length`` (default 1024; older TRL:
  ``max_seq_length``), ``packing``, ``packing_strategy``, ``padding_free``, ``completion_only_loss``,
  ``assistant_only_loss``, ``loss_type`` (unset: ``chunked_nll``, or ``nll`` with Liger), ``activation_offloading``,
  ``model_init_kwargs``; SFTConfig turns ``gradient_checkpointing`` and ``bf16`` on by default.
- axolotl ``src/axolotl/utils/schemas/{config,training,peft,model}.py`` (axolotl-ai-cloud/axolotl at commit
  70be5461) and ``examples/llama-3/qlora.yml``: ``base_model``, ``sequence_len``, ``micro_batch_size``,
  ``gradient_accumulation_steps``, ``optimizer`` (default ``adamw_torch_fused``, training.py), ``adapter``,
  ``load_in_4bit``/``load_in_8bit``, ``lora_r``/``lora_alpha``/``lora_dropout``/``lora_target_modules``/
  ``lora_target_linear``, ``sample_packing``, ``pad_to_sequence_len``, ``flash_attention``/``sdp_attention``,
  ``plugins`` with ``liger_*`` flags, ``deepspeed``, ``fsdp``/``fsdp_config``. ``src/axolotl/utils/config/__init__.py``
  loads the weights in bf16 when ``bf16``/``bfloat16`` is set (fp16 for ``fp16``/``float16``/``load_in_8bit``), and
  ``src/axolotl/loaders/model.py`` builds QLoRA's BitsAndBytesConfig with nf4 and double quantization on, updated by
  ``bnb_config_kwargs``.
- LLaMA-Factory ``src/llamafactory/hparams/{model_args,data_args,finetuning_args}.py`` and
  ``examples/train_lora/llama3_lora_sft.yaml`` (hiyouga/LLaMA-Factory at commit 13d252fa): ``model_name_or_path``,
  ``finetuning_type`` (default ``lora``), ``lora_rank`` (default 8), ``lora_alpha`` (default ``2 * lora_rank``),
  ``lora_dropout`` (default 0), ``lora_target`` (default ``all``), ``quantization_bit``, ``quantization_type``,
  ``double_quantization``, ``cutoff_len`` (default 2048), ``packing``/``neat_packing``, ``flash_attn``,
  ``enable_liger_kernel``, ``disable_gradient_checkpointing`` (checkpointing is on by default for every
  method), ``use_reentrant_gc`` (default true), ``use_unsloth``; the rest are ``Seq2SeqTrainingArguments``.
- peft ``LoraConfig.to_dict()`` / ``adapter_config.json`` (``peft_type: LORA``, ``r``, ``lora_alpha``,
  ``lora_dropout``, ``target_modules``, ``base_model_name_or_path``) and transformers' ``BitsAndBytesConfig``
  (``quant_method: bitsandbytes``, ``load_in_4bit``, ``bnb_4bit_quant_type``, ``bnb_4bit_use_double_quant``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftcalc.errors import ConfigError, InvalidArgumentError, UnknownModelError

__all__ = [
    "TrainerConfig",
    "FORMATS",
    "TRANSFORMERS_DEFAULT_OPTIM",
    "load_config_file",
    "detect_format",
    "read_trainer_config",
    "map_config",
    "map_optimizer",
]

FORMATS = ("axolotl", "llama-factory", "trl-sft", "transformers", "peft-lora", "bitsandbytes")

# transformers 5.25.0 training_args.py: `default_optim = "adamw_torch_fused"` when torch >= 2.8 (ftcalc pins 2.13)
TRANSFORMERS_DEFAULT_OPTIM = "adamw_torch_fused"
AXOLOTL_DEFAULT_OPTIM = "adamw_torch_fused"  # axolotl schemas/training.py: OptimizerNames.ADAMW_TORCH_FUSED
TRL_DEFAULT_MAX_LENGTH = 1024  # trl sft_config.py
AXOLOTL_DEFAULT_SEQUENCE_LEN = 512  # axolotl schemas/config.py: sequence_len default
LLAMAFACTORY_DEFAULT_CUTOFF_LEN = 2048  # LLaMA-Factory data_args.py
TA_DEFAULT_BATCH = 8  # transformers training_args.py: per_device_train_batch_size default

# Optimizer names as transformers' OptimizerNames (and axolotl, LLaMA-Factory, which pass them through) spell
# them -> ftcalc.model.options.OPTIMIZERS. Same state bytes and update temporaries, other kernel: same ftcalc name.
_OPTIM_MAP = {
    "adamw_torch": "adamw_torch",
    "adamw_hf": "adamw_torch",  # removed in transformers 5; older dumps
    "adamw_torch_fused": "adamw_torch_fused",
    "adamw_torch_xla": "adamw_torch",
    "adamw_torch_npu_fused": "adamw_torch_fused",
    "adamw_apex_fused": "adamw_torch_fused",
    "paged_adamw_32bit": "paged_adamw_32bit",
    "paged_adamw": "paged_adamw_32bit",
    "paged_adamw_8bit": "paged_adamw_8bit",
    "adamw_8bit": "adamw_8bit",  # transformers: an alias of adamw_bnb_8bit
    "adamw_bnb_8bit": "adamw_8bit",
    "sgd": "sgd",
    "adafactor": "adafactor",
}

# TrainingArguments fields (transformers 5.25.0) that change neither memory nor step speed of the training step
_TA_HARMLESS = {
    "output_dir", "num_train_epochs", "max_steps", "learning_rate", "lr_scheduler_type", "lr_scheduler_kwargs",
    "warmup_steps", "warmup_ratio", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon",
    "average_tokens_across_devices", "logging_strategy", "logging_steps", "logging_first_step", "log_on_each_node",
    "logging_nan_inf_filter", "include_num_input_tokens_seen", "log_level", "log_level_replica", "disable_tqdm",
    "report_to", "run_name", "project", "trackio_space_id", "trackio_bucket_id", "trackio_static_space_id",
    "eval_strategy", "eval_steps", "eval_delay", "per_device_eval_batch_size", "prediction_loss_only",
    "eval_on_start", "eval_do_concat_batches", "eval_use_gather_object", "eval_accumulation_steps",
    "include_for_metrics", "batch_eval_metrics", "save_only_model", "save_strategy", "save_steps",
    "save_on_each_node", "save_total_limit", "enable_jit_checkpoint", "push_to_hub", "hub_token",
    "hub_private_repo", "hub_model_id", "hub_strategy", "hub_always_push", "hub_revision", "load_best_model_at_end",
    "metric_for_best_model", "greater_is_better", "ignore_data_skip", "restore_callback_states_from_checkpoint",
    "full_determinism", "seed", "data_seed", "accelerator_config", "dataloader_drop_last", "dataloader_num_workers",
    "dataloader_pin_memory", "dataloader_persistent_workers", "dataloader_prefetch_factor",
    "dataloader_multiprocessing_context", "dataloader_in_order", "remove_unused_columns", "label_names",
    "train_sampling_strategy", "length_column_name", "ddp_find_unused_parameters", "ddp_bucket_cap_mb",
    "ddp_broadcast_buffers", "ddp_static_graph", "ddp_backend", "ddp_timeout", "debug", "skip_memory_metrics",
    "do_train", "do_eval", "do_predict", "resume_from_checkpoint", "local_rank", "use_cache", "bf16_full_eval",
    "fp16_full_eval", "overwrite_output_dir", "logging_dir", "group_by_length", "push_to_hub_model_id",
    "push_to_hub_organization", "push_to_hub_token", "_n_gpu", "mp_parameters", "predict_with_generate",
    "generation_max_length", "generation_num_beams", "generation_config", "sortish_sampler", "adam_beta3",
    "use_mps_device", "tpu_num_cores", "past_index", "jit_mode_eval", "half_precision_backend",
    "fp16_opt_level", "fp16_backend", "use_legacy_prediction_loop", "ray_scope",
    "dispatch_batches", "split_batches", "include_inputs_for_metrics", "include_tokens_per_second",
    "evaluation_strategy", "torchdynamo", "optim_target_modules_", "use_ipex", "xpu_backend",
}
_SFT_HARMLESS = {"chat_template_path", "dataset_text_field", "dataset_kwargs", "dataset_num_proc", "eos_token",
                 "truncation_mode", "shuffle_dataset", "eval_packing", "pad_token", "model_init_kwargs",
                 "packing_strategy", "pad_to_multiple_of", "dataset_batch_size", "trust_remote_code",
                 "router_aux_loss_coef"}
_AXOLOTL_HARMLESS = {
    "model_type", "tokenizer_type", "tokenizer_config", "trust_remote_code", "strict", "datasets", "test_datasets",
    "dataset_prepared_path", "val_set_size", "output_dir", "lora_model_dir", "lora_fan_in_fan_out", "wandb_project",
    "wandb_entity", "wandb_watch", "wandb_name", "wandb_log_model", "wandb_run_id", "mlflow_tracking_uri",
    "num_epochs", "max_steps", "lr_scheduler", "learning_rate", "warmup_steps", "warmup_ratio", "weight_decay",
    "train_on_inputs", "group_by_length", "early_stopping_patience", "resume_from_checkpoint", "local_rank",
    "logging_steps", "evals_per_epoch", "eval_steps", "eval_table_size", "saves_per_epoch", "save_steps",
    "save_strategy", "save_total_limit", "debug", "special_tokens", "tokens", "chat_template", "hub_model_id",
    "seed", "dataset_processes", "shuffle_merged_datasets", "eval_sample_packing", "lr_scheduler_kwargs",
    "cosine_min_lr_ratio", "adam_beta1", "adam_beta2", "adam_epsilon", "logging_dir", "save_safetensors",
    "peft_use_rslora", "loss_watchdog_threshold", "loss_watchdog_patience", "eval_batch_size", "bf16_full_eval",
    "is_llama_derived_model", "is_mistral_derived_model", "is_qwen_derived_model", "default_system_message",
    "dataset_exact_deduplication", "eval_max_new_tokens", "eval_causal_lm_metrics", "do_causal_lm_eval",
    "lora_target_linear", "base_model_config", "tokenizer_use_fast", "tokenizer_legacy", "gradient_checkpointing_kwargs", "bnb_config_kwargs", "world_size",
}
_LLAMAFACTORY_HARMLESS = {
    "trust_remote_code", "stage", "template", "dataset", "dataset_dir", "eval_dataset", "max_samples",
    "overwrite_cache", "preprocessing_num_workers", "plot_loss", "val_size", "tokenized_path", "streaming",
    "buffer_size", "mix_strategy", "interleave_probs", "ignore_pad_token_for_loss", "train_on_prompt",
    "mask_history", "cache_dir", "model_revision", "hf_hub_token", "adapter_name_or_path", "create_new_adapter",
    "new_special_tokens", "resize_vocab", "split_special_tokens", "low_cpu_mem_usage", "print_param_status",
    "default_system", "enable_thinking", "use_fast_tokenizer", "image_max_pixels", "video_max_pixels",
    "quantization_method", "quantization_device_map", "double_quantization", "quantization_type",
    "export_dir", "infer_backend", "lora_alpha", "lora_dropout", "lora_rank", "lora_target",
}
# peft LoraConfig / BitsAndBytesConfig keys that change neither memory nor speed
_PEFT_HARMLESS = {"peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode", "bias",
                  "fan_in_fan_out", "init_lora_weights", "use_rslora", "layers_to_transform", "layers_pattern",
                  "rank_pattern", "alpha_pattern", "auto_mapping", "megatron_config", "megatron_core",
                  "loftq_config", "layer_replication", "runtime_config", "lora_bias", "exclude_modules",
                  "eva_config", "corda_config", "target_parameters", "trainable_token_indices", "qalora_group_size",
                  "use_qalora", "r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save", "use_dora",
                  "ensure_weight_tying", "arrow_config", "alora_invocation_tokens", "peft_version",
                  "astra_config", "lora_ga_config", "velora_config", "monteclora_config", "use_bdlora", "kasa_config"}
_BNB_HARMLESS = {"quant_method", "load_in_4bit", "load_in_8bit", "llm_int8_threshold", "llm_int8_skip_modules",
                 "llm_int8_enable_fp32_cpu_offload", "llm_int8_has_fp16_weight", "bnb_4bit_quant_type",
                 "bnb_4bit_use_double_quant", "bnb_4bit_compute_dtype", "bnb_4bit_quant_storage",
                 "_load_in_4bit", "_load_in_8bit"}

# keys naming the data-parallel world size (not in TrainingArguments.to_dict(); launch configs and some dumps)
_WORLD_KEYS = ("world_size", "num_processes", "nproc_per_node", "num_gpus", "n_gpu", "_n_gpu")

# keys whose presence identifies a format, strongest first
_SIGNATURES = {
    "axolotl": ("base_model", "sequence_len", "micro_batch_size", "sample_packing", "lora_target_linear", "adapter",
                "num_epochs", "pad_to_sequence_len", "flash_attention", "lr_scheduler"),
    "llama-factory": ("finetuning_type", "cutoff_len", "stage", "template", "lora_rank", "lora_target",
                      "quantization_bit", "flash_attn", "disable_gradient_checkpointing", "model_name_or_path"),
    "trl-sft": ("max_length", "max_seq_length", "packing", "padding_free", "dataset_text_field",
                "completion_only_loss", "assistant_only_loss", "packing_strategy", "model_init_kwargs",
                "activation_offloading"),
}


@dataclass
class TrainerConfig:
    """What a trainer's config file says, in ftcalc's terms.

    Attributes:
        tool: the detected format (one of :data:`FORMATS` minus the side files), e.g. ``axolotl``.
        paths: the files read, main config first.
        model: the model named by the file (catalog id, hub id or path), or None.
        options: keyword arguments for :func:`ftcalc.model.options.make_options`.
        mapped: ``{ftcalc option: "key=value" it came from}``.
        not_modelled: ``"key=value: what it does that ftcalc does not model"``, one per key.
        unknown: keys that are neither mapped, nor not-modelled, nor known to change nothing.
        assumptions: defaults filled in for keys the file does not give.
    """

    tool: str
    paths: list[str]
    model: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    mapped: dict[str, str] = field(default_factory=dict)
    not_modelled: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"tool": self.tool, "paths": self.paths, "model": self.model, "options": dict(self.options),
                "mapped": dict(self.mapped), "not_modelled": list(self.not_modelled), "unknown": list(self.unknown),
                "assumptions": list(self.assumptions)}

    def make_options(self, **overrides: Any) -> Any:
        """:class:`ftcalc.model.options.TrainingOptions` from the file, ``overrides`` (not None) winning."""
        from ftcalc.model.options import make_options

        merged = dict(self.options)
        merged.update({k: v for k, v in overrides.items() if v is not None})
        return make_options(**merged)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file into a dict (``yaml.safe_load``: no tags, nothing executed).

    Raises:
        ConfigError: missing, unreadable, malformed, or not a mapping at the top.
    """
    import yaml

    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"--from {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--from {path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:  # YAML is a superset of JSON
            data = yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--from {path}: malformed JSON at line {e.lineno} column {e.colno} ({e.msg})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"--from {path}: malformed YAML{where} ({problem}); only plain YAML is read "
                          "(yaml.safe_load)") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--from {path}: expected a mapping of keys at the top, got {type(data).__name__}")
    return data


def detect_format(data: dict[str, Any], where: str = "config") -> str:
    """The format of a config dict, from its keys (one of :data:`FORMATS`).

    Raises:
        ConfigError: the keys match none of the formats ftcalc reads.
    """
    if str(data.get("peft_type", "")).upper() == "LORA" or {"r", "lora_alpha", "target_modules"} <= data.keys():
        return "peft-lora"
    if "peft_type" in data:
        raise ConfigError(f"{where}: peft_type {data['peft_type']!r} is not read; ftcalc models LORA adapters")
    if str(data.get("quant_method", "")).lower() == "bitsandbytes" or "bnb_4bit_quant_type" in data:
        return "bitsandbytes"
    scores = {tool: sum(k in data for k in keys) for tool, keys in _SIGNATURES.items()}
    if scores["axolotl"] >= 3 or ("base_model" in data and scores["axolotl"] >= 2):
        return "axolotl"  # three of its keys identify axolotl even without base_model (then: "names no model")
    if scores["llama-factory"] >= 3 or ("model_name_or_path" in data and scores["llama-factory"] >= 2):
        return "llama-factory"
    if "per_device_train_batch_size" in data or "optim" in data or "output_dir" in data:
        return "trl-sft" if scores["trl-sft"] >= 2 or "max_seq_length" in data or "max_length" in data \
            else "transformers"
    best = max(scores, key=scores.get)  # type: ignore[arg-type]
    if scores[best] >= 2:
        return best
    raise ConfigError(f"{where}: unknown config format (keys {', '.join(sorted(map(str, data))[:8])}...); "
                      "expected an axolotl or LLaMA-Factory YAML, a TRL SFTConfig or transformers "
                      "TrainingArguments dump (to_dict()), a peft LoraConfig or a BitsAndBytesConfig")


def map_optimizer(name: Any, key: str, cfg: _Mapping) -> None:
    """Map an optimizer name as a trainer spells it; one ftcalc does not model is named and estimated as AdamW."""
    raw = str(getattr(name, "value", name)).strip().lower()
    if raw in _OPTIM_MAP:
        cfg.set("optimizer", _OPTIM_MAP[raw], f"{key}={raw}")
    else:
        cfg.set("optimizer", "adamw_torch", f"{key}={raw} (not modelled)")
        cfg.not_modelled.append(f"{key}={raw}: optimizer not modelled; estimated with adamw_torch (two fp32 "
                                f"states per trainable parameter; ftcalc models {', '.join(sorted(set(_OPTIM_MAP.values())))})")


class _Mapping:
    """Accumulates one file's mapping: options set, keys consumed, notes."""

    def __init__(self, data: dict[str, Any], tool: str) -> None:
        self.data, self.tool = data, tool
        self.options: dict[str, Any] = {}
        self.mapped: dict[str, str] = {}
        self.not_modelled: list[str] = []
        self.assumptions: list[str] = []
        self.seen: set[str] = set()
        self.model: str | None = None

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        v = self.data.get(key, default)
        return default if v is None else v

    def get_or_assume(self, key: str, default: Any, whose: str) -> Any:
        """The file's value of ``key``, else ``default``, recorded as an assumption ("KEY not given: WHOSE
        default DEFAULT")."""
        v = self.get(key)
        if v is None:
            v = default
            self.assumptions.append(f"{key} not given: {whose} default {default}")
        return v

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def set(self, option: str, value: Any, source: str) -> None:
        self.options[option] = value
        self.mapped[option] = source

    def note(self, key: str, why: str) -> None:
        """A key that changes memory or speed and that ftcalc does not model, when it is set to a non-default."""
        self.seen.add(key)
        v = self.data.get(key)
        if v not in (None, False, "", [], {}, 0, "no", "none"):
            self.not_modelled.append(f"{key}={_short(v)}: {why}")


def _short(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, (dict, list)) else str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes", "auto", "on")
    return bool(v)


def _dtype_name(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).replace("torch.", "").lower()
    return {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}.get(s, s)


def _precision(cfg: _Mapping, bf16: bool, fp16: bool, dtype: str | None, dtype_src: str, amp_src: str) -> None:
    """bf16/fp16 autocast and the weights' dtype -> ftcalc's precision (Lightning's names, options.PRECISIONS)."""
    if dtype in (None, "auto"):
        cfg.assumptions.append("model dtype not given: transformers 5 loads the checkpoint's dtype "
                               "(from_pretrained dtype='auto'); assumed bf16")
        dtype = "bfloat16"
    if fp16:
        cfg.not_modelled.append("fp16=true: fp16 autocast and its GradScaler; estimated with bf16's byte sizes "
                                "(same 2 bytes per value; the scaler's state is not counted)")
    if dtype == "float32":
        prec = "bf16-mixed" if (bf16 or fp16) else "32-true"
    elif dtype in ("bfloat16", "float16"):
        prec = "bf16-true"  # 16-bit weights; autocast or not, activations and grads are 16-bit
    else:
        raise InvalidArgumentError(f"{dtype_src}={dtype!r}: expected bfloat16, float16, float32 or auto")
    cfg.set("precision", prec, f"{amp_src}, {dtype_src}={dtype}")


def _targets(v: Any) -> tuple[str, ...] | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = [t for t in v.split(",") if t.strip()]
    items = tuple(str(t).strip() for t in v)
    if any(t in ("all-linear", "all_linear", "all") for t in items):
        return ("all-linear",)
    return items or None


def _apply_lora(cfg: _Mapping, r: Any, alpha: Any, dropout: Any, targets: Any, src: dict[str, str]) -> None:
    if r is not None:
        cfg.set("lora_r", int(r), f"{src['r']}={r}")
    if alpha is not None:
        cfg.set("lora_alpha", float(alpha), f"{src['alpha']}={alpha}")
    if dropout is not None:
        cfg.set("lora_dropout", float(dropout), f"{src['dropout']}={dropout}")
    t = _targets(targets)
    if t:
        cfg.set("lora_targets", t, f"{src['targets']}={_short(targets)}")


def _checkpointing(cfg: _Mapping, on: Any, kwargs: Any, src: str) -> None:
    if on is None:
        return
    cfg.set("gradient_checkpointing", bool(_truthy(on)), f"{src}={on}")
    if _truthy(on) and isinstance(kwargs, dict):
        if kwargs.get("use_reentrant") is True:
            cfg.not_modelled.append("use_reentrant=true: reentrant checkpointing (torch.utils.checkpoint's old "
                                    "path); ftcalc models use_reentrant=False, transformers 5's default")
        if kwargs.get("offload"):
            cfg.not_modelled.append("activation_checkpointing_kwargs.offload=true: saved activations held in pinned "
                                    "host memory; the estimate keeps them on the GPU (an over-estimate)")
        if int(kwargs.get("every_n_layers", 1) or 1) > 1:
            cfg.not_modelled.append(f"every_n_layers={kwargs['every_n_layers']}: checkpoints only every n-th layer; "
                                    "estimated as every layer checkpointed (an under-estimate)")


def _world(cfg: _Mapping) -> None:
    for k in _WORLD_KEYS:
        if cfg.has(k):
            n = int(cfg.get(k))
            if n > 1:
                cfg.set("num_gpus", n, f"{k}={n}")
            return


def _common_trainer_keys(cfg: _Mapping) -> None:
    """TrainingArguments keys shared by transformers, TRL and LLaMA-Factory files."""
    cfg.note("tf32", "TF32 matmuls change speed only on Ampere+; the time model assumes bf16 tensor cores")
    cfg.note("torch_compile", "torch.compile changes activation memory and speed; not modelled")
    for k in ("torch_compile_backend", "torch_compile_mode"):
        cfg.note(k, "torch.compile setting; not modelled")
    cfg.note("auto_find_batch_size", "the Trainer halves the batch after an OOM and retries; estimated at the "
                                     "file's batch size")
    cfg.note("deepspeed", "DeepSpeed ZeRO shards/offloads differently from ftcalc's DDP/FSDP model; not modelled")
    fsdp = cfg.get("fsdp")
    if fsdp not in (None, "", [], False):
        cfg.not_modelled.append(f"fsdp={_short(fsdp)}: the file's FSDP settings are not read; with --num-gpus > 1 "
                                "ftcalc picks DDP or FSDP2 full-shard itself (docs/multi-gpu.md)")
    cfg.note("fsdp_config", "FSDP settings; not modelled (see fsdp)")
    cfg.note("torch_empty_cache_steps", "torch.cuda.empty_cache every N steps lowers reserved memory between steps")
    cfg.note("neftune_noise_alpha", "NEFTune adds a noise tensor the size of the embeddings output")
    cfg.note("label_smoothing_factor", "label smoothing adds logits-sized temporaries to the loss")
    cfg.note("optim_args", "optimizer arguments; not modelled")
    cfg.note("optim_target_modules", "GaLore/APOLLO target modules; not modelled")
    cfg.note("parallelism_config", "tensor/context parallelism; not modelled")
    cfg.note("use_cpu", "training on the CPU; ftcalc estimates a GPU")
    cfg.seen.update({"gradient_checkpointing_kwargs", "activation_checkpointing_kwargs"})  # read by _checkpointing
    g = cfg.get("max_grad_norm")
    if g not in (None, 0, 0.0):
        cfg.not_modelled.append(f"max_grad_norm={g}: gradient clipping's norm temporaries (one fp32 norm per "
                                "parameter, torch.nn.utils.clip_grad_norm_ foreach) are not modelled")
    liger = cfg.get("use_liger_kernel")
    lk = cfg.get("liger_kernel_config") or {}
    if _truthy(liger):
        if lk.get("fused_linear_cross_entropy", True):
            cfg.set("loss", "fused", "use_liger_kernel=true")
        cfg.not_modelled.append("use_liger_kernel=true: Liger's RMSNorm/SwiGLU/RoPE kernels are not modelled "
                                "(only its fused linear cross-entropy is, as --loss fused)")
    _world(cfg)


def _map_batch_keys(cfg: _Mapping) -> None:
    """per_device_train_batch_size and gradient_accumulation_steps, as TrainingArguments (and LLaMA-Factory,
    which takes its arguments) spell them."""
    bs = cfg.get_or_assume("per_device_train_batch_size", TA_DEFAULT_BATCH, "TrainingArguments")
    cfg.set("batch_size", int(bs), f"per_device_train_batch_size={bs}")
    ga = cfg.get("gradient_accumulation_steps")
    if ga is not None:
        cfg.set("gradient_accumulation_steps", int(ga), f"gradient_accumulation_steps={ga}")


def _map_transformers(cfg: _Mapping, sft: bool) -> None:
    d = cfg.data
    cfg.seen.update(_TA_HARMLESS & d.keys())
    _map_batch_keys(cfg)
    on, key = cfg.get("activation_checkpointing"), "activation_checkpointing"
    alias = cfg.get("gradient_checkpointing")  # deprecated alias; transformers 5 sets both in __post_init__
    if not on and alias is not None:
        on, key = alias, "gradient_checkpointing"
    if on is None and sft:
        on, key = True, "gradient_checkpointing(SFTConfig default)"
    if on is None:
        on = False
    kwargs = cfg.get("activation_checkpointing_kwargs") or cfg.get("gradient_checkpointing_kwargs")
    _checkpointing(cfg, on, kwargs, key)
    map_optimizer(cfg.get_or_assume("optim", TRANSFORMERS_DEFAULT_OPTIM, "transformers 5"), "optim", cfg)
    mik = cfg.get("model_init_kwargs") or {}
    if isinstance(mik, str):
        try:
            mik = json.loads(mik)
        except json.JSONDecodeError:
            mik = {}
    dtype = _dtype_name(mik.get("dtype") or mik.get("torch_dtype") or cfg.get("torch_dtype") or cfg.get("dtype"))
    bf16 = cfg.get("bf16")
    if bf16 is None and sft and not _truthy(cfg.get("fp16")):
        bf16 = True  # SFTConfig: bf16 defaults to True unless fp16 is set
    _precision(cfg, _truthy(bf16), _truthy(cfg.get("fp16")), dtype, "model dtype", f"bf16={bf16}")
    attn = mik.get("attn_implementation") or cfg.get("attn_implementation")
    if attn:
        _attention(cfg, attn, "attn_implementation")
    qc = mik.get("quantization_config")
    if isinstance(qc, dict):
        _apply_bnb(cfg, qc, "model_init_kwargs.quantization_config")
    for k in ("model_name_or_path", "model", "model_id", "base_model_name_or_path"):
        if isinstance(d.get(k), str) and d.get(k):
            cfg.seen.add(k)
            cfg.model = d[k]
            break
    if sft:
        _map_sft(cfg)
    _common_trainer_keys(cfg)


def _map_sft(cfg: _Mapping) -> None:
    cfg.seen.update(_SFT_HARMLESS & cfg.data.keys())
    key = "max_length" if "max_length" in cfg.data else ("max_seq_length" if "max_seq_length" in cfg.data else None)
    n = cfg.get(key) if key else None
    if n is None:
        n = TRL_DEFAULT_MAX_LENGTH
        cfg.assumptions.append(f"max_length not given (or null): SFTConfig default {n}")
        key = "max_length"
    cfg.set("seq_len", int(n), f"{key}={n}")
    packing = _truthy(cfg.get("packing"))
    if packing:
        cfg.assumptions.append(f"packing=true: every row holds {n} tokens, the fixed length ftcalc models")
    else:
        cfg.assumptions.append(f"packing=false: the collator pads each batch to its longest row; estimated at "
                               f"the longest batch ({n} tokens per row)")
    cfg.note("padding_free", "one flattened row per batch (FlashAttention varlen); estimated as batch x "
                             "max_length tokens in padded rows (an upper bound)")
    cfg.note("activation_offloading", "saved activations moved to host memory; estimated on the GPU "
                                      "(an over-estimate)")
    cfg.note("completion_only_loss", "prompt tokens masked from the loss; same shapes, not modelled")
    cfg.note("assistant_only_loss", "non-assistant tokens masked from the loss; same shapes, not modelled")
    lt = cfg.get("loss_type")
    liger = _truthy(cfg.get("use_liger_kernel"))
    if lt in (None, "chunked_nll") and not liger:
        cfg.not_modelled.append(f"loss_type={lt or 'unset (chunked_nll)'}: TRL computes lm_head and the "
                                "cross-entropy in chunks on unmasked tokens; ftcalc models full fp32 logits "
                                "(an over-estimate of the loss peak)")
    elif lt not in (None, "nll"):
        cfg.not_modelled.append(f"loss_type={lt}: not modelled; estimated as the standard loss")


def _attention(cfg: _Mapping, value: Any, key: str) -> None:
    v = str(value).lower()
    table = {"sdpa": "sdpa", "eager": "eager", "flash_attention_2": "flash_attention_2", "fa2": "flash_attention_2",
             "disabled": "eager", "auto": "auto", "flash_attention_3": "flash_attention_2",
             "kernels-community/flash-attn": "flash_attention_2"}
    if v in table:
        cfg.set("attention", table[v], f"{key}={value}")
        if v == "flash_attention_3":
            cfg.not_modelled.append(f"{key}={value}: FlashAttention 3 estimated as FlashAttention 2")
    else:
        cfg.not_modelled.append(f"{key}={value}: attention kernel not modelled; estimated with transformers' choice")


def _apply_bnb(cfg: _Mapping, q: dict[str, Any], where: str) -> None:
    if _truthy(q.get("load_in_4bit")) or q.get("bnb_4bit_quant_type"):
        cfg.set("method", "qlora", f"{where}.load_in_4bit=true")
        qt = q.get("bnb_4bit_quant_type")
        if qt:
            cfg.set("quant_type", str(qt), f"{where}.bnb_4bit_quant_type={qt}")
        if q.get("bnb_4bit_use_double_quant") is not None:
            cfg.set("double_quant", bool(q["bnb_4bit_use_double_quant"]),
                    f"{where}.bnb_4bit_use_double_quant={q['bnb_4bit_use_double_quant']}")
        else:
            cfg.set("double_quant", False, f"{where} (bnb_4bit_use_double_quant default false)")
    elif _truthy(q.get("load_in_8bit")):
        cfg.not_modelled.append(f"{where}.load_in_8bit=true: LLM.int8 base weights are not modelled; estimated "
                                "as LoRA on 16-bit weights (an over-estimate of the weights)")
    for k in set(q) - _BNB_HARMLESS:
        cfg.not_modelled.append(f"{where}.{k}={_short(q[k])}: BitsAndBytesConfig key not read")


def _map_axolotl(cfg: _Mapping) -> None:
    d = cfg.data
    cfg.seen.update(_AXOLOTL_HARMLESS & d.keys())
    cfg.model = cfg.get("base_model")
    n = cfg.get_or_assume("sequence_len", AXOLOTL_DEFAULT_SEQUENCE_LEN, "axolotl")
    cfg.set("seq_len", int(n), f"sequence_len={n}")
    mb = cfg.get("micro_batch_size")
    ga = cfg.get("gradient_accumulation_steps")
    gbs = cfg.get("batch_size")
    if mb is None and gbs is not None and ga:
        mb = max(1, int(gbs) // int(ga))
        cfg.set("batch_size", mb, f"batch_size={gbs} / gradient_accumulation_steps={ga}")
    elif mb is not None:
        cfg.set("batch_size", int(mb), f"micro_batch_size={mb}")
    else:
        cfg.assumptions.append("micro_batch_size not given: axolotl default 1")
        cfg.set("batch_size", 1, "micro_batch_size (default 1)")
    if ga is None and gbs is not None and mb:
        ga = max(1, int(gbs) // int(mb))
    if ga is not None:
        cfg.set("gradient_accumulation_steps", int(ga), f"gradient_accumulation_steps={ga}")
    gc = cfg.get("gradient_checkpointing")
    if isinstance(gc, str) and gc.lower() in ("unsloth", "offload"):
        cfg.set("gradient_checkpointing", True, f"gradient_checkpointing={gc}")
        cfg.not_modelled.append(f"gradient_checkpointing={gc}: checkpointed activations offloaded to host memory; "
                                "estimated on the GPU (an over-estimate)")
    else:
        _checkpointing(cfg, gc if gc is not None else False, cfg.get("gradient_checkpointing_kwargs"),
                       "gradient_checkpointing")
    cfg.note("activation_offloading", "activations offloaded to host memory; estimated on the GPU")
    map_optimizer(cfg.get_or_assume("optimizer", AXOLOTL_DEFAULT_OPTIM, "axolotl"), "optimizer", cfg)
    bf16, fp16 = cfg.get("bf16"), cfg.get("fp16")
    dtype = "bfloat16" if (_truthy(bf16) or _truthy(cfg.get("bfloat16"))) else (
        "float16" if (_truthy(fp16) or _truthy(cfg.get("float16"))) else "float32")
    if str(bf16).lower() == "auto":
        cfg.assumptions.append("bf16=auto: bf16 where the GPU supports it (Ampere and newer), assumed here")
    _precision(cfg, _truthy(bf16), _truthy(fp16), dtype, "load dtype", f"bf16={bf16}")
    cfg.note("tf32", "TF32 matmuls change speed only; not modelled")
    adapter = cfg.get("adapter")
    four, eight = _truthy(cfg.get("load_in_4bit")), _truthy(cfg.get("load_in_8bit"))
    if adapter in (None, ""):
        cfg.set("method", "full", "adapter unset (full fine-tuning)")
    elif str(adapter).lower() == "qlora" or (str(adapter).lower() == "lora" and four):
        cfg.set("method", "qlora", f"adapter={adapter}, load_in_4bit={cfg.get('load_in_4bit')}")
    elif str(adapter).lower() == "lora":
        cfg.set("method", "lora", f"adapter={adapter}")
        if eight:
            cfg.not_modelled.append("load_in_8bit=true: LLM.int8 base weights are not modelled; estimated as LoRA "
                                    "on 16-bit weights (an over-estimate of the weights)")
    else:
        raise InvalidArgumentError(f"adapter={adapter!r}: ftcalc models lora and qlora (or no adapter: full)")
    if cfg.options["method"] != "full":
        targets = cfg.get("lora_target_modules")
        if _truthy(cfg.get("lora_target_linear")):
            targets = "all-linear"
        _apply_lora(cfg, cfg.get("lora_r"), cfg.get("lora_alpha"), cfg.get("lora_dropout"), targets,
                    {"r": "lora_r", "alpha": "lora_alpha", "dropout": "lora_dropout",
                     "targets": "lora_target_linear" if targets == "all-linear" else "lora_target_modules"})
    bnb = cfg.get("bnb_config_kwargs") or {}
    if cfg.options.get("method") == "qlora":
        qt = bnb.get("bnb_4bit_quant_type", "nf4")
        cfg.set("quant_type", str(qt), f"bnb_config_kwargs.bnb_4bit_quant_type={qt}")
        dq = bnb.get("bnb_4bit_use_double_quant", True)  # axolotl's loader default: double quant on
        cfg.set("double_quant", bool(dq), f"bnb_config_kwargs.bnb_4bit_use_double_quant={dq}")
    cfg.note("lora_modules_to_save", "embeddings/head made trainable: their gradients and optimizer states are "
                                     "not modelled")
    cfg.note("peft_use_dora", "DoRA's magnitude vectors and extra activations are not modelled")
    for k in ("lora_mlp_kernel", "lora_qkv_kernel", "lora_o_kernel", "unsloth_lora_mlp", "unsloth_lora_qkv",
              "unsloth_lora_o", "unsloth_cross_entropy_loss", "unsloth_rms_norm", "unsloth_rope"):
        cfg.note(k, "fused LoRA/Unsloth kernels change activation memory and speed; not modelled")
    if _truthy(cfg.get("flash_attention")):
        _attention(cfg, "flash_attention_2", "flash_attention")
    elif _truthy(cfg.get("sdp_attention")):
        _attention(cfg, "sdpa", "sdp_attention")
    elif _truthy(cfg.get("eager_attention")):
        _attention(cfg, "eager", "eager_attention")
    for k in ("xformers_attention", "s2_attention", "flex_attention"):
        cfg.note(k, "attention kernel not modelled; estimated with transformers' default")
    if _truthy(cfg.get("sample_packing")):
        cfg.assumptions.append(f"sample_packing=true: every row holds {n} tokens, the fixed length ftcalc models")
    elif _truthy(cfg.get("pad_to_sequence_len")):
        cfg.assumptions.append(f"pad_to_sequence_len=true: every row padded to {n} tokens")
    else:
        cfg.assumptions.append(f"sample_packing off: rows padded to the batch's longest; estimated at {n} tokens")
    cfg.seen.update({"sample_packing", "pad_to_sequence_len", "flash_attention", "sdp_attention", "eager_attention",
                     "bfloat16", "float16", "batch_size"})
    plugins = [str(p) for p in (cfg.get("plugins") or [])]
    if any("liger" in p.lower() for p in plugins):
        if _truthy(cfg.get("liger_fused_linear_cross_entropy")):
            cfg.set("loss", "fused", "plugins: LigerPlugin, liger_fused_linear_cross_entropy=true")
        for k in ("liger_rms_norm", "liger_glu_activation", "liger_rope", "liger_layer_norm", "liger_cross_entropy"):
            cfg.note(k, "Liger kernel other than the fused linear cross-entropy; not modelled")
    else:
        cfg.seen.add("liger_fused_linear_cross_entropy")
    if any("cut_cross_entropy" in p.lower() for p in plugins):
        cfg.not_modelled.append("plugins: CutCrossEntropyPlugin: no logits materialised; estimated as the standard "
                                "loss (an over-estimate of the loss peak)")
    other = [p for p in plugins if "liger" not in p.lower() and "cut_cross_entropy" not in p.lower()]
    if other:
        cfg.not_modelled.append(f"plugins={_short(other)}: not modelled")
    cfg.note("chunked_cross_entropy", "chunked cross-entropy lowers the loss peak; not modelled")
    cfg.note("relora", "ReLoRA restarts; not modelled")
    cfg.note("llama4_linearized_experts", "not modelled")
    _common_trainer_keys(cfg)
    cfg.seen.add("fsdp_version")


def _map_llamafactory(cfg: _Mapping) -> None:
    d = cfg.data
    cfg.seen.update((_LLAMAFACTORY_HARMLESS | _TA_HARMLESS) & d.keys())
    cfg.model = cfg.get("model_name_or_path")
    stage = str(cfg.get("stage", "sft"))
    if stage not in ("sft", "pt"):
        cfg.not_modelled.append(f"stage={stage}: a reference/reward model and pairwise batches are not modelled; "
                                "estimated as supervised fine-tuning of one model")
    n = cfg.get_or_assume("cutoff_len", LLAMAFACTORY_DEFAULT_CUTOFF_LEN, "LLaMA-Factory")
    cfg.set("seq_len", int(n), f"cutoff_len={n}")
    _map_batch_keys(cfg)
    off = _truthy(cfg.get("disable_gradient_checkpointing", False))
    cfg.set("gradient_checkpointing", not off, f"disable_gradient_checkpointing={off}")
    if not off and _truthy(cfg.get("use_reentrant_gc", True)):
        cfg.not_modelled.append("use_reentrant_gc=true (LLaMA-Factory's default): reentrant checkpointing; ftcalc "
                                "models use_reentrant=False")
    map_optimizer(cfg.get_or_assume("optim", TRANSFORMERS_DEFAULT_OPTIM, "transformers 5"), "optim", cfg)
    bf16, fp16, pure = cfg.get("bf16"), cfg.get("fp16"), cfg.get("pure_bf16")
    dtype = "bfloat16" if (_truthy(bf16) or _truthy(pure)) else ("float16" if _truthy(fp16) else
                                                                  _dtype_name(cfg.get("infer_dtype")) or None)
    if dtype in (None, "auto"):
        dtype = "float32"
        cfg.assumptions.append("neither bf16, pure_bf16 nor fp16: fp32 weights assumed")
    _precision(cfg, _truthy(bf16), _truthy(fp16), dtype, "compute dtype", f"bf16={bf16}")
    ft = str(cfg.get("finetuning_type", "lora"))
    qbit = cfg.get("quantization_bit")
    if ft == "lora":
        if qbit is not None and int(qbit) == 4:
            cfg.set("method", "qlora", f"finetuning_type=lora, quantization_bit={qbit}")
            qt = cfg.get("quantization_type", "nf4")
            cfg.set("quant_type", str(qt), f"quantization_type={qt}")
            dq = _truthy(cfg.get("double_quantization", True))
            cfg.set("double_quant", dq, f"double_quantization={dq}")
            qm = str(cfg.get("quantization_method", "bnb"))
            if qm not in ("bnb", "bitsandbytes"):
                cfg.not_modelled.append(f"quantization_method={qm}: only bitsandbytes 4-bit is modelled")
        else:
            cfg.set("method", "lora", f"finetuning_type={ft}")
            if qbit is not None:
                cfg.not_modelled.append(f"quantization_bit={qbit}: only 4-bit bitsandbytes is modelled; estimated "
                                        "as LoRA on 16-bit weights")
        r = int(cfg.get("lora_rank", 8))
        alpha = cfg.get("lora_alpha")
        if alpha is None:
            alpha = 2 * r  # finetuning_args.py: lora_alpha defaults to lora_rank * 2
            cfg.assumptions.append(f"lora_alpha not given: LLaMA-Factory default 2 x lora_rank = {alpha}")
        if not cfg.has("lora_dropout"):
            cfg.assumptions.append("lora_dropout not given: LLaMA-Factory default 0.0")
        if not cfg.has("lora_target"):
            cfg.assumptions.append("lora_target not given: LLaMA-Factory default all (every linear layer)")
        _apply_lora(cfg, r, alpha, cfg.get("lora_dropout", 0.0), cfg.get("lora_target", "all"),
                    {"r": "lora_rank", "alpha": "lora_alpha", "dropout": "lora_dropout", "targets": "lora_target"})
    elif ft == "full":
        cfg.set("method", "full", "finetuning_type=full")
    else:
        cfg.set("method", "full", f"finetuning_type={ft} (as full)")
        cfg.not_modelled.append(f"finetuning_type={ft}: only some layers trained; estimated as full fine-tuning "
                                "(an upper bound)")
    for k, why in (("use_dora", "DoRA's magnitude vectors and extra activations"),
                   ("pissa_init", "PiSSA's SVD at start-up"),
                   ("additional_target", "extra trainable modules"),
                   ("use_galore", "GaLore projected optimizer states"), ("use_apollo", "APOLLO optimizer states"),
                   ("use_badam", "BAdam block-wise updates"), ("use_unsloth", "Unsloth's kernels and offloaded "
                                                                          "checkpointing"),
                   ("use_unsloth_gc", "Unsloth's offloaded gradient checkpointing"),
                   ("upcast_layernorm", "fp32 norm weights"), ("upcast_lmhead_output", "fp32 lm_head output"),
                   ("shift_attn", "LongLoRA shifted attention"), ("neat_packing", "packing without "
                                                                                 "cross-attention")):
        cfg.note(k, f"{why}: not modelled")
    cfg.seen.add("use_rslora")
    fa = cfg.get("flash_attn")
    if fa is not None:
        _attention(cfg, fa, "flash_attn")
    if _truthy(cfg.get("enable_liger_kernel")):
        cfg.set("loss", "fused", "enable_liger_kernel=true")
        cfg.not_modelled.append("enable_liger_kernel=true: Liger's RMSNorm/SwiGLU/RoPE kernels are not modelled "
                                "(only its fused linear cross-entropy is, as --loss fused)")
    packing = cfg.get("packing")
    if packing is None:
        packing = stage == "pt"  # data_args.py: packing defaults to True for pre-training, else False
    cfg.assumptions.append(f"packing={packing}: " + (f"every row holds {n} tokens" if packing else
                           f"rows padded to the batch's longest; estimated at {n} tokens"))
    _common_trainer_keys(cfg)
    cfg.seen.update({"use_reentrant_gc", "pure_bf16", "infer_dtype", "quantization_bit", "finetuning_type"})


def _map_peft(cfg: _Mapping) -> None:
    d = cfg.data
    cfg.seen.update(_PEFT_HARMLESS & d.keys())
    cfg.set("method", "lora", "peft_type=LORA")
    _apply_lora(cfg, d.get("r"), d.get("lora_alpha"), d.get("lora_dropout"), d.get("target_modules"),
                {"r": "r", "alpha": "lora_alpha", "dropout": "lora_dropout", "targets": "target_modules"})
    if d.get("base_model_name_or_path"):
        cfg.model = d["base_model_name_or_path"]
    cfg.note("modules_to_save", "modules trained in full beside the adapters: their gradients and optimizer states "
                                "are not modelled")
    cfg.note("use_dora", "DoRA's magnitude vectors and extra activations are not modelled")


def map_config(data: dict[str, Any], tool: str | None = None, where: str = "config") -> TrainerConfig:
    """Map one config dict (any of :data:`FORMATS`) to a :class:`TrainerConfig`."""
    tool = tool or detect_format(data, where)
    cfg = _Mapping(data, tool)
    try:
        if tool == "axolotl":
            _map_axolotl(cfg)
        elif tool == "llama-factory":
            _map_llamafactory(cfg)
        elif tool in ("trl-sft", "transformers"):
            _map_transformers(cfg, sft=tool == "trl-sft")
        elif tool == "peft-lora":
            _map_peft(cfg)
        elif tool == "bitsandbytes":
            cfg.seen.update(data.keys())
            _apply_bnb(cfg, data, "BitsAndBytesConfig")
        else:
            raise ConfigError(f"{where}: format {tool!r} is not one of {', '.join(FORMATS)}")
    except (TypeError, ValueError) as e:  # an int() or float() of a wrong value
        raise ConfigError(f"{where}: a value of the wrong type ({e})") from None
    unknown = sorted(str(k) for k in data if k not in cfg.seen and k not in _WORLD_KEYS)
    return TrainerConfig(tool=tool, paths=[where], model=cfg.model, options=cfg.options, mapped=cfg.mapped,
                         not_modelled=cfg.not_modelled, unknown=unknown, assumptions=cfg.assumptions)


def _merge(main: TrainerConfig, side: TrainerConfig) -> None:
    """Fold a LoraConfig / BitsAndBytesConfig into the trainer config; qlora from a side file wins over lora."""
    for k, v in side.options.items():
        if k == "method" and main.options.get("method") == "qlora" and v == "lora":
            continue
        main.options[k] = v
        main.mapped[k] = f"{Path(side.paths[0]).name}: {side.mapped[k]}"
    main.not_modelled += side.not_modelled
    main.unknown += [f"{Path(side.paths[0]).name}: {u}" for u in side.unknown]
    main.assumptions += side.assumptions
    main.paths += side.paths
    main.model = main.model or side.model


def read_trainer_config(paths: str | Path | list[str | Path]) -> TrainerConfig:
    """Read one trainer config plus optional peft LoraConfig / BitsAndBytesConfig files, merged.

    A transformers/TRL dump without adapters is full fine-tuning unless a LoraConfig (``method`` lora) or a
    BitsAndBytesConfig with 4-bit (``method`` qlora) comes with it; nested ``peft_config`` / ``lora_config`` /
    ``quantization_config`` mappings in the main file are read the same way.

    Raises:
        ConfigError: a file is missing, malformed, or of no known format; two trainer configs given.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    main: TrainerConfig | None = None
    sides: list[TrainerConfig] = []
    for p in paths:
        data = load_config_file(p)
        nested = []
        for key in ("peft_config", "lora_config", "quantization_config"):
            if isinstance(data.get(key), dict):
                nested.append((key, data.pop(key)))
        tc = map_config(data, where=str(p))
        if tc.tool in ("peft-lora", "bitsandbytes"):
            sides.append(tc)
        elif main is not None:
            raise ConfigError(f"--from {p}: a second trainer config ({tc.tool}) after {main.paths[0]} "
                              f"({main.tool}); give one trainer config plus LoraConfig/BitsAndBytesConfig files")
        else:
            main = tc
        for key, sub in nested:
            sides.append(map_config(sub, where=f"{p}:{key}"))
    if main is None:
        raise ConfigError(f"--from {', '.join(map(str, paths))}: only adapter/quantization configs; add the "
                          "trainer's config (axolotl/LLaMA-Factory YAML, SFTConfig or TrainingArguments dump)")
    if "seq_len" not in main.options:
        from ftcalc.model.options import TrainingOptions

        main.assumptions.append(f"no sequence length in a {main.tool} config: ftcalc's default "
                                f"{TrainingOptions().seq_len} (pass --seq-len, the longest row the collator builds)")
    if main.tool in ("trl-sft", "transformers") and "method" not in main.options:
        main.options["method"] = "full"
        main.mapped["method"] = "no LoraConfig given (full fine-tuning)"
    for s in sides:
        _merge(main, s)
    return main


def resolve_from(tc: TrainerConfig, model_flag: str | None) -> Any:
    """The model spec: ``--model`` if given, else the file's model; one line when neither names one."""
    from ftcalc.tables.catalog import resolve_model

    name = model_flag or tc.model
    if not name:
        raise UnknownModelError(f"--from {tc.paths[0]}: the {tc.tool} config names no model; pass --model "
                                "(catalog id, config.json path or hub id)")
    return resolve_model(name)
