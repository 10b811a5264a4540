"""The training recipe, the Hugging Face way: model + adapters + optimizer + one training step.

Shared by ``ftcalc profile`` (measurements) and ``ftcalc run`` (the executor) so that what is measured
is what runs. Every heavy import (torch, transformers, peft, bitsandbytes, accelerate) happens inside
these functions: importing this module costs nothing.

What the recipe does, option by option (the estimator in ftcalc/model/memory.py models exactly this):
- weights: bf16 for ``bf16-true``, fp32 for ``bf16-mixed`` and ``32-true``; bf16 autocast for both
  bf16 precisions (as HF Trainer's ``bf16=True`` does on top of a bf16 or fp32 model).
- ``init="random"``: the model is built from its config with random weights directly on the device
  (memory and speed do not depend on the values); QLoRA builds on the meta device and quantizes
  layer by layer to NF4/FP4 with bitsandbytes, so a 70B model never exists in bf16.
- LoRA/QLoRA: peft ``LoraConfig`` on the chosen targets; adapters in fp32 (peft's
  ``autocast_adapter_dtype=True``); QLoRA through ``prepare_model_for_kbit_training`` (non-quantized
  parameters upcast to fp32).
- gradient checkpointing: transformers' per-decoder-layer checkpointing, non-reentrant.
- loss: the model's own causal-LM loss with labels = input ids (fp32 upcast of the logits), or
  ``loss="fused"``: Liger's fused linear cross-entropy (no B*T*V logits).
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from ftcalc.errors import InvalidArgumentError, MissingDependencyError
from ftcalc.model.options import TrainingOptions
from ftcalc.tables.catalog import ModelSpec

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["hf_config", "build_model", "build_model_sharded", "make_accelerator", "build_optimizer", "autocast",
           "train_step", "accumulated_step", "random_batch", "weight_dtype"]


def _require_train_stack() -> None:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise MissingDependencyError(
            "training and profiling need the heavy stack: pip install '.[train]' in the ftcalc source folder"
        ) from None


def weight_dtype(opts: TrainingOptions) -> torch.dtype:
    import torch

    return torch.bfloat16 if opts.precision == "bf16-true" else torch.float32


def hf_config(spec: ModelSpec) -> Any:
    """A transformers config object built from the catalog's config.json fields (no download)."""
    from transformers import AutoConfig

    cfg = dict(spec.config)
    if "text_config" in cfg and "hidden_size" not in cfg:  # Gemma 3 4B+: train the language model
        inner = dict(cfg["text_config"])
        inner.setdefault("model_type", f"{cfg.get('model_type', '')}_text")
        cfg = inner
    model_type = cfg.pop("model_type")
    drop = {"architectures", "transformers_version", "auto_map", "quantization_config", "torch_dtype", "dtype"}
    hf = AutoConfig.for_model(model_type, **{k: v for k, v in cfg.items() if k not in drop})
    hf.use_cache = False  # training: no KV cache
    return hf


def _attn_impl(opts: TrainingOptions) -> str | None:
    return None if opts.attention == "auto" else opts.attention


def _init_(t: torch.Tensor, name: str) -> torch.Tensor:
    """Random values of the right kind: ones for norm weights, zeros for biases, N(0, 0.02) elsewhere."""
    if "norm" in name:
        return t.fill_(1.0)
    if name.endswith("bias"):
        return t.zero_()
    return t.normal_(0.0, 0.02)


def _decoder_linears(model: Any) -> list[tuple[str, Any]]:
    """The decoder layers' Linear modules (what QLoRA quantizes and "all-linear" LoRA adapts), by name."""
    import torch.nn as nn

    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in f".{n}."]


def _quantize_decoder_linears(model: Any, make_4bit: Any) -> None:
    """Replace every decoder Linear by ``make_4bit(name, linear)`` (a bitsandbytes Linear4bit) and mark the model
    4-bit, which is what peft checks to dispatch its bnb LoRA layers."""
    for name, lin in _decoder_linears(model):
        parent, attr = name.rsplit(".", 1)
        setattr(model.get_submodule(parent), attr, make_4bit(name, lin))
    model.is_loaded_in_4bit = True
    model.is_quantized = True


def build_qlora_random(spec: ModelSpec, opts: TrainingOptions, device: str) -> Any:
    """Meta-device model, each decoder Linear replaced by a bitsandbytes Linear4bit quantized on the device."""
    import bitsandbytes as bnb
    import torch
    import torch.nn as nn
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from transformers import AutoModelForCausalLM

    cfg = hf_config(spec)
    with init_empty_weights():  # parameters on meta; buffers (rotary inv_freq) stay real on the CPU
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation=_attn_impl(opts))

    def quantized(name: str, lin: Any) -> Any:
        q = bnb.nn.Linear4bit(
            lin.in_features, lin.out_features, bias=lin.bias is not None, compute_dtype=torch.bfloat16,
            compress_statistics=opts.double_quant, quant_type=opts.quant_type, device="meta",
        )
        data = _init_(torch.empty(lin.out_features, lin.in_features, dtype=torch.bfloat16, device=device), name)
        q.weight = bnb.nn.Params4bit(
            data, requires_grad=False, compress_statistics=opts.double_quant, quant_type=opts.quant_type,
            blocksize=64,
        ).to(device)  # .to() on an unquantized Params4bit quantizes it; the bf16 data is freed
        if lin.bias is not None:
            q.bias = nn.Parameter(torch.zeros(lin.out_features, dtype=torch.bfloat16, device=device), requires_grad=False)
        return q

    _quantize_decoder_linears(model, quantized)
    tied = spec.arch.tie_word_embeddings
    for name, p in list(model.named_parameters()):
        if p.device.type == "meta" and not (tied and name == "lm_head.weight"):
            value = _init_(torch.empty(p.shape, dtype=torch.bfloat16, device=device), name)
            set_module_tensor_to_device(model, name, device, value=value)
    for mod in model.modules():
        for bname, buf in list(mod._buffers.items()):
            if buf is not None and buf.device.type != torch.device(device).type:
                mod._buffers[bname] = buf.to(device)
    if tied:
        model.tie_weights()
    return model


def build_model(spec: ModelSpec, opts: TrainingOptions, device: str = "cuda", init: str = "random",
                model_path: str | None = None, sharded: bool = False) -> Any:
    """Build the model ready for training: weights, quantization, adapters, checkpointing, train mode.

    Args:
        spec: the resolved model.
        opts: training options (method, precision, LoRA settings, attention, checkpointing...).
        device: ``cuda`` (or ``cuda:N``) or ``cpu``.
        init: ``random`` (from the config, nothing downloaded) or ``pretrained`` (``model_path`` or the
            hub id, through ``from_pretrained``).
        sharded: QLoRA to be wrapped by FSDP afterwards (``init: pretrained``; random weights go through
            ``build_model_sharded``): the 4-bit rows stored in bf16 (``bnb_4bit_quant_storage``), no fp32 upcast,
            bf16 adapters, as in the Hugging Face FSDP-QLoRA recipe. Every rank loads the whole 4-bit model onto its
            GPU before FSDP shards it.
    Returns:
        A transformers (or peft-wrapped) model in train mode on ``device``.
    """
    _require_train_stack()
    import torch
    from transformers import AutoModelForCausalLM

    if opts.method == "qlora" and not str(device).startswith("cuda"):
        try:
            import bitsandbytes  # noqa: F401
        except ImportError:
            raise MissingDependencyError("QLoRA needs bitsandbytes: pip install '.[train]' in the ftcalc source folder") from None
    dtype = weight_dtype(opts)
    if opts.loss == "fused":
        _apply_fused_loss_patch(spec)
    if init == "random":
        if opts.method == "qlora":
            model = build_qlora_random(spec, opts, device)
        else:
            with torch.device(device):
                model = AutoModelForCausalLM.from_config(hf_config(spec), dtype=dtype,
                                                         attn_implementation=_attn_impl(opts))
    elif init == "pretrained":
        kwargs: dict[str, Any] = dict(dtype=dtype if opts.method != "qlora" else torch.bfloat16,
                                      attn_implementation=_attn_impl(opts))
        if opts.method == "qlora":
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type=opts.quant_type,
                bnb_4bit_use_double_quant=opts.double_quant, bnb_4bit_compute_dtype=torch.bfloat16,
                **({"bnb_4bit_quant_storage": torch.bfloat16} if sharded else {}),
            )
            kwargs["device_map"] = {"": device}
        model = AutoModelForCausalLM.from_pretrained(model_path or spec.id, **kwargs)
        if opts.method != "qlora":
            model.to(device)
    else:
        raise InvalidArgumentError(f"init '{init}': expected random or pretrained")
    model.config.use_cache = False
    return apply_training_setup(model, opts, sharded=sharded)


def make_accelerator(spec: ModelSpec, strategy: str, reshard_after_forward: bool = True,
                     offload_params: bool = False, state_dict_type: str = "FULL_STATE_DICT",
                     cpu_ram_efficient_loading: bool = False, cpu: bool = False) -> Any:
    """accelerate's Accelerator for ``ddp`` or ``fsdp`` (FSDP2, one unit per decoder layer), as
    ``accelerate launch`` with the matching config file sets it up. ``mixed_precision="no"``: the recipe
    autocasts itself (the same numerics on one GPU and many). ``cpu``: processes on the CPU over gloo;
    accelerate makes a CPU launch ``MULTI_CPU`` only when asked (accelerate/state.py, _prepare_backend), and
    otherwise leaves every process unwrapped and unsynchronized (``DistributedType.NO``)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, FullyShardedDataParallelPlugin

    from ftcalc.train.spec import DECODER_LAYER_CLASSES

    kwargs: dict[str, Any] = {"mixed_precision": "no", "cpu": cpu}
    if strategy == "fsdp":
        layer = DECODER_LAYER_CLASSES.get(spec.arch.model_type)
        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            fsdp_version=2, reshard_after_forward=reshard_after_forward, cpu_offload=offload_params,
            auto_wrap_policy="transformer_based_wrap", transformer_cls_names_to_wrap=[layer] if layer else None,
            state_dict_type=state_dict_type, cpu_ram_efficient_loading=cpu_ram_efficient_loading,
        )
    elif strategy == "ddp":
        kwargs["kwargs_handlers"] = [DistributedDataParallelKwargs(find_unused_parameters=False)]
    else:
        raise InvalidArgumentError(f"strategy '{strategy}': expected ddp or fsdp")
    return Accelerator(**kwargs)


def offloads_params(fsdp_plugin: Any) -> bool:
    """Whether accelerate's FSDP plugin keeps the parameters in host memory. accelerate turns
    ``cpu_offload=False`` into FSDP2's base ``OffloadPolicy()`` (no offload), an object that is truthy: only
    its ``CPUOffloadPolicy`` subclass (FSDP2) or ``CPUOffload(offload_params=True)`` (FSDP1) offloads."""
    from torch.distributed.fsdp import CPUOffload, CPUOffloadPolicy

    policy = getattr(fsdp_plugin, "cpu_offload", None)
    if isinstance(policy, CPUOffloadPolicy):
        return True
    if isinstance(policy, CPUOffload):
        return bool(policy.offload_params)
    return policy is True


def build_model_sharded(spec: ModelSpec, opts: TrainingOptions, accelerator: Any, device: str) -> Any:
    """FSDP2 with random weights: the model is built on the meta device, adapted (peft), sharded by
    ``accelerator.prepare`` (which leaves meta parameters on meta), and only then materialized: each rank
    allocates and initializes its own shards, so a model larger than one GPU never exists whole
    (Llama-3-70B in bf16 on 2 GPUs). Buffers (rotary ``inv_freq``) are built for real and put back after
    ``to_empty``. With CPU offload (the plugin's ``cpu_offload``) the shards are materialized in host memory,
    where FSDP2 keeps them (and the optimizer steps them); only the buffers go to ``device``. Full fine-tuning,
    LoRA, and QLoRA (4-bit weights packed in bf16, sharded by FSDP2; quantization state per rank:
    ``_meta_linear4bit``). Build the optimizer after this (``build_optimizer``), over the
    sharded parameters."""
    _require_train_stack()
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    qlora = opts.method == "qlora"
    if opts.loss == "fused":
        _apply_fused_loss_patch(spec)
    with init_empty_weights(include_buffers=False):  # parameters on meta, buffers real (on the CPU)
        model = AutoModelForCausalLM.from_config(hf_config(spec), dtype=torch.bfloat16 if qlora else weight_dtype(opts),
                                                 attn_implementation=_attn_impl(opts))
    model.config.use_cache = False
    buffers = [(mod, name, buf.clone()) for mod in model.modules() for name, buf in mod._buffers.items()
               if buf is not None]
    if qlora:
        _meta_linear4bit(model, opts)
    model = apply_training_setup(model, opts, sharded=True)
    # accelerate's own FSDP2 wrapping (what Accelerator.prepare runs), called directly: prepare() maps the
    # optimizer's parameters by data pointer, which meta tensors do not have; the optimizer is built after
    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    if getattr(accelerator.state, "fsdp_plugin", None) is None:
        raise InvalidArgumentError(
            f"FSDP is not set up (accelerate's distributed type is {accelerator.distributed_type}): FSDP runs "
            "under torchrun or accelerate launch on CUDA GPUs")
    model = fsdp2_prepare_model(accelerator, model)
    accelerator._models.append(model)  # as prepare() does (clip_grad_norm_, unwrap_model, no_sync use it)
    offload = offloads_params(accelerator.state.fsdp_plugin)
    if offload and qlora:
        raise InvalidArgumentError("FSDP CPU offload with qlora is not supported by this recipe (bitsandbytes "
                                   "re-quantizes 4-bit weights moved to the GPU)")
    model.to_empty(device="cpu" if offload else device)
    with torch.no_grad():
        packed = _fill_linear4bit_shards(model, opts, device) if qlora else set()
        for name, p in model.named_parameters():
            if id(p) not in packed:
                _init_(p.to_local() if hasattr(p, "to_local") else p, name)
        for mod, name, buf in buffers:
            mod._buffers[name] = buf.to(device)
    return model


def _meta_linear4bit(model: Any, opts: TrainingOptions) -> None:
    """Sharded QLoRA (FSDP + bitsandbytes, as in the Hugging Face / Answer.AI FSDP-QLoRA recipe): every decoder
    Linear becomes a Linear4bit whose weight is already the packed 4-bit tensor, stored as bfloat16
    (``quant_storage``), on the meta device, so that FSDP2 shards the packed rows like any bf16 parameter.
    ``module=`` lets bitsandbytes restore the quantization state FSDP2 strips from the gathered weight
    (``fix_4bit_weight_quant_state_from_module``); the state itself is set per rank by
    ``_fill_linear4bit_shards``."""
    import bitsandbytes as bnb
    import torch

    def packed_on_meta(name: str, lin: Any) -> Any:
        q = bnb.nn.Linear4bit(lin.in_features, lin.out_features, bias=lin.bias is not None,
                              compute_dtype=torch.bfloat16, compress_statistics=opts.double_quant,
                              quant_type=opts.quant_type, quant_storage=torch.bfloat16, device="meta")
        rows = (lin.in_features * lin.out_features + 1) // 4  # 4-bit values, four per bfloat16 element
        q.weight = bnb.nn.Params4bit(torch.empty(rows, 1, dtype=torch.bfloat16, device="meta"), requires_grad=False,
                                     compress_statistics=opts.double_quant, quant_type=opts.quant_type, blocksize=64,
                                     quant_storage=torch.bfloat16, module=q, bnb_quantized=True)
        return q

    _quantize_decoder_linears(model, packed_on_meta)


def _fill_linear4bit_shards(model: Any, opts: TrainingOptions, device: str) -> set[int]:
    """Each rank quantizes every Linear4bit's random bf16 weight, one module at a time, from a seed all ranks
    share (so that the replicated quantization state describes the gathered rows), keeps that state on the
    module (``module.quant_state``: not sharded, every rank holds all of it) and copies its own rows of the
    packed weight into its FSDP2 shard. Returns the ids of the parameters it filled."""
    import bitsandbytes as bnb
    import torch
    import torch.distributed as dist

    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    filled = set()
    mods = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for i, m in enumerate(mods):
        gen = torch.Generator(device=device).manual_seed(1_000_003 + i)
        w = torch.empty(m.out_features, m.in_features, dtype=torch.bfloat16, device=device).normal_(
            0.0, 0.02, generator=gen)
        packed, state = bnb.functional.quantize_4bit(w, blocksize=64, compress_statistics=opts.double_quant,
                                                     quant_type=opts.quant_type, quant_storage=torch.bfloat16)
        del w
        p = m.weight
        local = p.to_local() if hasattr(p, "to_local") else p
        if local.numel():  # FSDP2's shard: this rank's torch.chunk of dim 0
            local.copy_(torch.chunk(packed, world, dim=0)[rank][: local.shape[0]])
        m.quant_state = state
        filled.add(id(p))
    return filled


def apply_training_setup(model: Any, opts: TrainingOptions, sharded: bool = False) -> Any:
    """Adapters, QLoRA preparation, gradient checkpointing and train mode (the peft/HF way). ``sharded``
    QLoRA (FSDP) skips ``prepare_model_for_kbit_training`` and keeps the adapters in the model's bf16, as TRL's
    SFTTrainer does for sharded QLoRA (its ``is_sharded_qlora``: no fp32 upcast, ``autocast_adapter_dtype=False``)."""
    if opts.method == "qlora" and not sharded:
        from peft import prepare_model_for_kbit_training

        # Freezes everything and upcasts every non-4-bit parameter (embeddings, norms, lm_head) to fp32.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if opts.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if opts.uses_adapters:
            model.enable_input_require_grads()  # as peft does for k-bit models
    if opts.uses_adapters:
        from peft import LoraConfig, get_peft_model

        missing = _missing_targets(model, opts.lora_targets)
        if missing:
            raise InvalidArgumentError(
                f"--lora-targets: no module named {', '.join(missing)} in this model "
                f"(it has {', '.join(sorted(_linear_names(model)))})"
            )
        lcfg = LoraConfig(
            r=opts.lora_r, lora_alpha=opts.lora_alpha, lora_dropout=opts.lora_dropout,
            # "all-linear": every Linear but the output head (peft tuners_utils)
            target_modules="all-linear" if "all-linear" in opts.lora_targets else list(opts.lora_targets),
            bias="none", task_type="CAUSAL_LM",
        )
        # adapters in fp32 (autocast_adapter_dtype=True), but in bf16 for sharded QLoRA
        model = get_peft_model(model, lcfg, autocast_adapter_dtype=not (sharded and opts.method == "qlora"))
    model.train()
    return model


def _linear_names(model: Any) -> set[str]:
    return {n.rsplit(".", 1)[-1] for n, _ in _decoder_linears(model)}


def _missing_targets(model: Any, targets: tuple[str, ...]) -> list[str]:
    names = _linear_names(model)
    return [t for t in targets if t not in names and t != "all-linear"]


def _apply_fused_loss_patch(spec: ModelSpec) -> None:
    """Liger's fused linear cross-entropy for this model family (only the loss; other kernels unchanged)."""
    try:
        import liger_kernel.transformers as lk
    except ImportError:
        raise MissingDependencyError("loss=fused needs liger-kernel (pip install liger-kernel) and a CUDA GPU") from None
    fn = {
        "llama": lk.apply_liger_kernel_to_llama, "mistral": lk.apply_liger_kernel_to_mistral,
        "mixtral": lk.apply_liger_kernel_to_mixtral, "qwen2": lk.apply_liger_kernel_to_qwen2,
        "qwen3": getattr(lk, "apply_liger_kernel_to_qwen3", None), "gemma": lk.apply_liger_kernel_to_gemma,
        "gemma2": lk.apply_liger_kernel_to_gemma2, "gemma3_text": getattr(lk, "apply_liger_kernel_to_gemma3_text", None),
        "phi3": lk.apply_liger_kernel_to_phi3,
    }.get(spec.arch.model_type)
    if fn is None:
        raise InvalidArgumentError(f"loss=fused: no Liger kernel for model_type {spec.arch.model_type}")
    kwargs = dict(fused_linear_cross_entropy=True, cross_entropy=False, rope=False, rms_norm=False)
    try:
        fn(swiglu=False, **kwargs)
    except TypeError:
        fn(**kwargs)


def build_optimizer(model: Any, opts: TrainingOptions, lr: float = 1e-4, weight_decay: float = 0.0) -> Any:
    """The optimizer named by ``opts.optimizer`` over the trainable parameters."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    name = opts.optimizer
    if name == "adamw_torch":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)
    if name == "adamw_torch_fused":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, scale_parameter=False, relative_step=False, warmup_init=False)
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise MissingDependencyError(f"optimizer {name} needs bitsandbytes: pip install '.[train]' in the ftcalc source folder") from None
    cls = {"paged_adamw_32bit": bnb.optim.PagedAdamW32bit, "paged_adamw_8bit": bnb.optim.PagedAdamW8bit,
           "adamw_8bit": bnb.optim.AdamW8bit}[name]
    return cls(params, lr=lr, weight_decay=weight_decay)


def autocast(opts: TrainingOptions, device: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for both bf16 precisions (HF Trainer bf16=True), nothing for 32-true."""
    import torch

    if opts.precision == "32-true":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def random_batch(vocab_size: int, opts: TrainingOptions, device: str, generator: Any = None) -> Any:
    """Random token ids of shape (batch, seq): memory and speed do not depend on the values."""
    import torch

    return torch.randint(0, vocab_size, (opts.batch_size, opts.seq_len), device=device, generator=generator)


def train_step(model: Any, optimizer: Any, input_ids: Any, opts: TrainingOptions, device: str,
               labels: Any = None, attention_mask: Any = None, step_optimizer: bool = True,
               loss_scale: float = 1.0, as_tensor: bool = False, marks: list[float] | None = None) -> Any:
    """Forward (labels = input ids unless given), backward, and optionally the optimizer step.

    The model output is dropped before backward (as HF Trainer does), so the bf16 logits do not
    outlive the forward pass. Returns the loss as a float, or with ``as_tensor`` as a detached device
    tensor (no host sync: the caller reads it after the step). ``marks`` (profiling) gets the
    ``time.perf_counter()`` of the moment the loss was read, which waits for the backward to finish: the
    boundary between the forward/backward phase and the optimizer phase of the step.
    """
    with autocast(opts, device):
        loss = model(input_ids=input_ids, labels=input_ids if labels is None else labels,
                     attention_mask=attention_mask, use_cache=False).loss
    (loss * loss_scale if loss_scale != 1.0 else loss).backward()
    value = loss.detach() if as_tensor else float(loss.detach())
    if marks is not None:
        marks.append(time.perf_counter())
    if step_optimizer:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return value


def accumulated_step(model: Any, optimizer: Any, input_ids: Any, opts: TrainingOptions, device: str,
                     no_sync: Any = None, marks: list[float] | None = None) -> float:
    """One optimizer step over ``opts.gradient_accumulation_steps`` micro-batches of ``input_ids`` (what
    ``ftcalc profile`` times); ``no_sync`` (e.g. ``accelerator.no_sync``) skips the gradient
    synchronization of all but the last micro-batch; ``marks``: see ``train_step`` (one mark per micro-batch).
    Returns the last micro-batch's loss."""
    accum = opts.gradient_accumulation_steps
    for k in range(accum):
        last = k == accum - 1
        ctx = no_sync(model) if no_sync is not None and not last else contextlib.nullcontext()
        with ctx:
            loss = train_step(model, optimizer, input_ids, opts, device, step_optimizer=last, loss_scale=1.0 / accum,
                              marks=marks)
    return loss
