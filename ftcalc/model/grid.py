"""The configuration grid: every (method, micro-batch, checkpointing) of a model with the byte counts the
vectorized per-GPU model (ftcalc/model/sharding.py) needs, and each configuration's step parts on each GPU
(ftcalc/model/throughput.py). The solver searches it; ftcalc.model.parallel and ftcalc.model.fit evaluate one
point of it, so the three answer alike.

    from ftcalc.model.grid import config_grid
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ftcalc.model import sharding as sh
from ftcalc.model.memory import (
    autocast_weight_copy_bytes,
    checkpoint_refusal,
    estimate_memory,
    gradient_bytes,
    load_coefficients,
    optimizer_state_bytes,
    optimizer_step_transient_bytes,
    simulated_gap_bytes,
    weights_bytes,
)
from ftcalc.model.options import TrainingOptions
from ftcalc.model.throughput import StepParts
from ftcalc.model.units import unquantized_bytes_per_param
from ftcalc.tables.catalog import ModelSpec
from ftcalc.tables.hardware import GPU
from ftcalc.tables.inventory import inventory


def config_grid(spec: ModelSpec, base: TrainingOptions, methods: Sequence[str], micro_batches: Sequence[int],
                 target_seqs: int, checkpointing: Sequence[bool] = (True, False), sharded_qlora: bool = False,
                 pending: dict[int, tuple] | None = None) -> tuple[list[TrainingOptions], sh.ModelStates]:
    """Every (method, micro-batch, checkpointing) and the byte counts ftcalc.model.sharding needs for each.
    ``sharded_qlora``: QLoRA twice, as peft prepares it (one GPU, DDP) and as FSDP runs it (bf16, not upcast:
    ``TrainingOptions.qlora_fp32_upcast``); otherwise QLoRA as ``base`` says.
    ``pending``: when given, the allocator simulations of full fine-tuning on one GPU and one DDP rank are not
    run: gap_single and gap_ddp are 0 (a lower bound: reserved >= allocated) and ``pending[config index]``
    gets what :func:`_resolve_config_gaps` needs to fill them in later (the screening of _Candidates)."""
    from ftcalc.model.memory import resolve_attention, simulation_supported

    arch = spec.arch
    inv = inventory(arch)
    c = load_coefficients()
    layers = arch.num_layers
    root_params = inv.params_by_kind.get("embed_tokens", 0) + inv.params_by_kind.get("lm_head", 0)
    opts_list: list[TrainingOptions] = []
    cols: dict[str, list[float]] = {f: [] for f in sh.ModelStates.__dataclass_fields__ if f != "gap_fraction"}
    variants = [(m, up) for m in methods
                for up in ((True, False) if m == "qlora" and sharded_qlora else (base.qlora_fp32_upcast,))]
    for method, upcast in variants:
        if method == "qlora" and base.precision == "32-true":
            continue  # QLoRA computes in bf16 (estimate_memory refuses 32-true)
        if checkpoint_refusal(arch.quantization, method, base.precision):
            continue  # a pre-quantized checkpoint: no full fine-tuning (estimate_memory refuses it)
        for mb in micro_batches:
            if mb > max(target_seqs, 1) and mb != 1:
                continue
            for ckpt in checkpointing:
                opts = base.model_copy(update={"method": method, "batch_size": mb, "gradient_checkpointing": ckpt,
                                               "qlora_fp32_upcast": upcast})
                mem = estimate_memory(arch, inv, opts, c)  # unconstrained: the fit test uses device_used
                w = weights_bytes(inv, opts, arch.quantization)
                states = optimizer_state_bytes(inv, opts)
                grads = gradient_bytes(inv, opts)
                paged = mem.breakdown.get("paged_optimizer_states", 0.0)
                tokens = opts.tokens_per_step
                act_all = c.activation_scale * sum(mem.activation_per_token_per_layer.values()) * tokens * layers
                per_param = unquantized_bytes_per_param(opts)
                root_b = root_params * per_param
                cols["weights"].append(w["weights"])
                cols["adapters"].append(w["lora_adapters"])
                cols["opt_states"].append(states["optimizer_states"])
                cols["opt_paged"].append(paged)
                cols["grads"].append(grads)
                cols["step_tmp"].append(optimizer_step_transient_bytes(inv, opts))
                cols["phase_loss"].append(mem.phases["loss_backward"])
                cols["phase_layer"].append(mem.phases["layer_backward"])
                cols["phase_emb"].append(mem.phases["embedding_backward"])
                cols["phase_opt"].append(mem.phases["optimizer_step"])
                cols["peak"].append(mem.peak_allocated_bytes)
                cols["gap"].append(mem.peak_reserved_bytes - mem.peak_allocated_bytes)
                cols["gap_transient"].append(mem.transient_gap_bytes)
                opts1 = opts.model_copy(update={"num_gpus": 1})
                if (pending is not None and method == "full"
                        and simulation_supported(arch, opts, resolve_attention(arch, opts))):
                    # estimate_memory(fragmentation="simulated") would add simulated_gap_bytes to this peak
                    peak = mem.peak_allocated_bytes
                    g1, gd = SIMULATED_GAPS.get((arch, opts1, False)), SIMULATED_GAPS.get((arch, opts1, True))
                    if g1 is None or gd is None:  # not simulated in this process yet: 0 for now (a lower bound)
                        pending[len(opts_list)] = (arch, opts1, peak, g1 is None, gd is None)
                    g1 = 0.0 if g1 is None else (peak + g1) - peak
                    gd = 0.0 if gd is None else gd
                    cols["gap_single"].append(g1)
                    cols["gap_ddp"].append(gd)
                else:
                    sim = estimate_memory(arch, inv, opts, c, fragmentation="simulated") if method == "full" else mem
                    cols["gap_single"].append(sim.peak_reserved_bytes - sim.peak_allocated_bytes)
                    cols["gap_ddp"].append(simulated_gap_bytes(arch, opts.model_copy(update={"num_gpus": 1}), ddp=True)
                                           if sim.fragmentation_model == "simulated" else cols["gap_single"][-1])
                cols["context"].append(mem.outside_allocator_bytes - paged)
                cols["act_x"].append(act_all + autocast_weight_copy_bytes(arch, inv, opts)["all_layers"])
                cols["ckpt"].append(ckpt)
                cols["full"].append(method == "full")
                cols["root_bytes"].append(root_b)
                cols["quant_state"].append(w["quant_state"])
                cols["layer_bytes"].append((w["weights"] - w["quant_state"] - root_b + w["lora_adapters"]) / layers)
                cols["layer_grad_bytes"].append(
                    grads * (1 - root_params / inv.total_params) / layers if method == "full" else 0.0)
                head = inv.params_by_kind.get("lm_head", 0) + arch.hidden_size
                embed = inv.params_by_kind.get("embed_tokens", 0)
                tied = bool(arch.tie_word_embeddings and not inv.params_by_kind.get("lm_head", 0))
                cols["unit_max_bytes"].append(per_param * (embed + head if tied else max(embed, head)))
                cols["units"].append(layers + 2)
                cols["tied"].append(tied)
                # in bytes of the sharded weights (sharded QLoRA: the bf16 embedding beside 4-bit Linears)
                cols["untied_share"].append(per_param * embed / (w["weights"] - w["quant_state"]) if tied else 0.0)
                cols["tail_bytes"].append(per_param * ((embed if tied else inv.params_by_kind.get("lm_head", 0))
                                                       + arch.hidden_size))
                cols["trainable_params"].append(mem.trainable_params)
                opts_list.append(opts)
    arrays = {k: np.asarray(v, dtype=bool if k in ("ckpt", "full", "tied") else float) for k, v in cols.items()}
    return opts_list, sh.ModelStates(**arrays, gap_fraction=c.reserved_gap_fraction)


SIMULATED_GAPS: dict[tuple, float] = {}  # (arch, options, ddp) -> simulated_gap_bytes, as simulated_gap got them


def simulated_gap(arch: Any, opts1: TrainingOptions, ddp: bool) -> float:
    """memory.simulated_gap_bytes, remembered so that a later search in this process knows it is simulated."""
    g = SIMULATED_GAPS[(arch, opts1, ddp)] = simulated_gap_bytes(arch, opts1, ddp=ddp)
    if len(SIMULATED_GAPS) > 4096:
        SIMULATED_GAPS.pop(next(iter(SIMULATED_GAPS)))
    return g


def micro_batch_times(spec: ModelSpec, opts_list: list[TrainingOptions], gpus: list[GPU]) -> StepParts:
    """Each [config, gpu]: one micro-batch's forward + backward (with its GPU and host-launch sides) and one
    optimizer update (ftcalc.model.throughput.step_parts)."""
    from ftcalc.model.throughput import load_throughput, step_parts

    tc = load_throughput()
    shape = (len(opts_list), len(gpus))
    gpu_s, cpu_s, opt_s, host_s, fwd = (np.empty(shape) for _ in range(5))
    for i, opts in enumerate(opts_list):
        for j, g in enumerate(gpus):
            p = step_parts(spec, opts, g, tc)
            gpu_s[i, j], cpu_s[i, j], opt_s[i, j], host_s[i, j] = p.gpu_s, p.cpu_s, p.optimizer_s, p.optimizer_host_s
            fwd[i, j] = p.forward_share
    return StepParts(gpu_s=gpu_s, cpu_s=cpu_s, optimizer_s=opt_s, power=tc.overlap_power, optimizer_host_s=host_s,
                     forward_share=fwd)
