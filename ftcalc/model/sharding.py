"""Memory per GPU and step time under data parallelism: single GPU, DDP, FSDP full-shard, FSDP + CPU offload,
FSDP shard-grad-op.

    ftcalc recommend --model 70b --method full --max-gpus 8      # the solver calls these, vectorized
    ftcalc.model.parallel.estimate_parallel(...)                       # one configuration

VALIDATED ON 2xH200 (docs/multi-gpu.md, 15 runs, 7 of them blind): per-GPU allocated within 1.9% on every
run, device used within 6% on 14 of 15, tokens/s within 15% on 14 of 15. The single-GPU terms come from
ftcalc.model.memory; what this module adds for 2+ GPUs (gradient buckets, sharded model states, gathered units,
FSDP's collective pools, NCCL buffers, communication time) is mechanism plus data/solver_assumptions.json,
where the NCCL buffer size and FSDP's per-collective cost are measured. Not measured: more than 2 GPUs,
several nodes, CPU offload, shard-grad-op.

Every function works elementwise on numpy arrays (one element per candidate) and on plain floats, so the
solver evaluates 10^4-10^5 candidates at once and a test can check one candidate by hand.

Memory per GPU starts from the single-GPU phases of ftcalc.model.memory.estimate_memory (loss/backward,
layer backward, optimizer step) and replaces the model states in each phase:

- single: as estimate_memory.
- ddp (torch DistributedDataParallel, what accelerate and the HF Trainer use by default): a full replica
  per GPU, plus the Reducer's gradient buckets, a flat copy of all gradients allocated at construction
  (torch/nn/parallel/distributed.py, ``gradient_as_bucket_view``: "the saved memory size will be equal to
  the total gradients size"), plus NCCL buffers outside the caching allocator (~0.5 GiB per communicator:
  Fujii et al. 2024, arXiv 2411.06465, notes of its memory-estimator tool).
- fsdp (FULL_SHARD / FSDP2 ``reshard_after_forward=True``, as accelerate's ``fsdp2_prepare_model`` wraps it):
  weights, adapters, gradients, optimizer states and the optimizer's temporaries divided by N; plus the
  units all-gathered at the phase's peak, each in full (FSDP2 all-gathers a unit into a new full-size
  buffer; the GPU's own shard stays allocated beside it). accelerate makes one unit per decoder layer, one
  of the input embedding, and a tail unit [final norm, LM head] (with tied weights: [final norm,
  embedding, LM head]) whose ``reshard_after_forward`` it sets to False ("forward-end / backward-start",
  accelerate/utils/fsdp_utils.py). At the loss: the tail and the last decoder layer, prefetched for
  backward; in a layer's backward: the current and the prefetched layer (FSDP1 ``BackwardPrefetch.BACKWARD_PRE``:
  "holding the current set of parameters and the next set's", torch/distributed/fsdp/api.py), and with
  tied weights the tail as well, its embedding's backward coming last; for full fine-tuning also one layer's
  unsharded gradient before its reduce-scatter; plus NCCL buffers. Measured on 4xH200 (run g-000,
  Llama-3-70B LoRA): going from 2 to 4 GPUs lowered the peak by the sharded states alone, the gathered
  part did not grow as (N-1)/N of the units would.
- fsdp_grad_op (FSDP2 ``reshard_after_forward=False``, about ZeRO-2): as fsdp, but every unit stays
  gathered from its forward to its backward, so at the loss and at the start of backward the whole model
  is unsharded in full beside the shards (runs g-002, g-004: the peak is the sharded states, the single-GPU
  activations and the full bf16 weights, within 0.2%).
- fsdp_offload (FSDP ``CPUOffload(offload_params=True)``): parameters, gradients and optimizer states live
  in host memory and the optimizer steps on the CPU; the GPU holds the gathered units (in full, its own
  shard is not resident) and the activations. The last resort: slow, and host RAM is not checked (the price
  table has no host-memory column).

Gradient accumulation (grad_accum > 1) keeps the gradients of earlier micro-batches alive into the next
forward pass (zero_grad runs once per optimizer step), so the loss phase gains G (sharded: G/N), and
without checkpointing the layer-backward phase holds activations and gradients together instead of the
larger of the two. ftcalc.model.memory models one micro-batch per optimizer step; this term belongs there
once TrainingOptions carries grad_accum.

Step time per GPU (seconds per optimizer step):

    grad_accum x (micro-batch time + exposed FSDP communication + offload copies)
    + exposed DDP all-reduce + optimizer time (1/N of it under FSDP; on the CPU under offload)

Communication volume per GPU (ring algorithms, NCCL): DDP all-reduces the gradients once per optimizer
step, 2 (N-1)/N x gradient bytes; FSDP all-gathers the weights in forward and again in backward and
reduce-scatters the gradients every micro-batch, (N-1)/N x (2 x weight bytes + gradient bytes), about
3 x parameter bytes for full fine-tuning (Lightning-AI/litgpt#607). It runs
at the interconnect's one-direction bandwidth (gpus.csv ``interconnect_gbps`` / 2) times the achieved
NCCL share (link_efficiency), inter-node at ``inter_node_gbps_per_gpu``; for FSDP ``comm_overlap`` of one
micro-batch's compute hides it and only the excess is exposed. DDP's all-reduce of 25 MB buckets runs at
``ddp_bucket_share`` of the large-message rate and, measured on 2 and 4 H200s, does not hide behind the
backward's compute (``ddp_comm_overlap`` 0: lab/benchmarks/nccl_bench.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ftcalc._paths import data_dir
from ftcalc.errors import DataFileError
from ftcalc.model.throughput import StepParts

__all__ = [
    "SHARDINGS", "SINGLE", "DDP", "FSDP", "FSDP_OFFLOAD", "FSDP_GRAD_OP",
    "Assumptions", "load_assumptions", "ModelStates",
    "device_used_per_gpu", "allocated_per_gpu", "compute_stream_peak", "collective_pool_bytes", "link_efficiency",
    "comm_bandwidth_bytes_per_s", "step_seconds_parallel",
    "startup_seconds", "checkpoint_seconds", "host_bytes_offload",
]

SHARDINGS = ("single", "ddp", "fsdp", "fsdp_offload", "fsdp_grad_op")
SINGLE, DDP, FSDP, FSDP_OFFLOAD, FSDP_GRAD_OP = range(5)


def _fsdp(sh: np.ndarray) -> np.ndarray:
    """Candidates sharded by FSDP (full-shard, with CPU offload, or shard-grad-op)."""
    return (sh == FSDP) | (sh == FSDP_OFFLOAD) | (sh == FSDP_GRAD_OP)


@dataclass(frozen=True)
class Assumptions:
    """data/solver_assumptions.json: each figure with its basis and source there."""

    nccl_buffer_bytes: float
    fsdp_collective_latency_s: float
    link_efficiency: dict[str, float]
    no_p2p_factor: float
    inter_node_gbps_per_gpu: float
    comm_overlap: float
    comm_contention: float
    ddp_comm_overlap: float
    ddp_bucket_share: dict[str, float]
    offload_host_gbps: float
    cpu_optimizer_params_per_s_per_gpu: float
    host_memory_bytes_per_gpu: float
    provisioning_s: float
    weights_download_gbps: float
    weights_load_gbps: float
    checkpoint_write_gbps: float
    checkpoint_interval_s: float
    source: str = ""


def load_assumptions(path: str | Path | None = None) -> Assumptions:
    """The solver's assumptions (default data/solver_assumptions.json), read once per path."""
    return _load_assumptions(str(path or data_dir() / "solver_assumptions.json"))


@lru_cache(maxsize=4)
def _load_assumptions(path: str) -> Assumptions:
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as e:
        raise DataFileError(f"{path}: cannot read the solver assumptions ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise DataFileError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None
    names = [f for f in Assumptions.__dataclass_fields__ if f != "source"]
    missing = [n for n in names if not isinstance(raw.get(n), dict) or "value" not in raw[n]]
    if missing:
        raise DataFileError(f"{path}: missing {', '.join(missing)} (each an object with value, basis, source)")
    return Assumptions(**{n: raw[n]["value"] for n in names}, source=f"{path} ({raw.get('date', 'undated')})")


@dataclass(frozen=True)
class ModelStates:
    """Per-configuration byte counts the sharding formulas need; each field an array over configurations.

    Built by the solver from ftcalc.model.memory for each (method, micro-batch, checkpointing) at one seq_len.
    """

    weights: np.ndarray  # resident weights (estimate_memory breakdown "weights")
    adapters: np.ndarray  # LoRA adapters (fp32)
    opt_states: np.ndarray  # optimizer states in the caching allocator
    opt_paged: np.ndarray  # paged optimizer states resident on the device (outside the allocator)
    grads: np.ndarray  # one gradient per trainable parameter
    step_tmp: np.ndarray  # optimizer.step() temporaries
    phase_loss: np.ndarray  # estimate_memory phases, allocated bytes
    phase_layer: np.ndarray
    phase_emb: np.ndarray  # the embedding's backward (full fine-tuning: its gradient, the tied sum)
    phase_opt: np.ndarray
    peak: np.ndarray  # max of the phases
    gap: np.ndarray  # reserved - allocated at the peak (caching-allocator fragmentation, fitted)
    gap_single: np.ndarray  # the same on one GPU as `ftcalc estimate` predicts it (simulated where supported)
    gap_ddp: np.ndarray  # the same on one DDP rank (simulated where supported, else gap_single)
    gap_transient: np.ndarray  # the fitted gap's terms of the step's transient tensors (MemoryEstimate)
    context: np.ndarray  # CUDA context and workspaces outside the allocator
    act_x: np.ndarray  # saved activations + autocast weight copies of all layers (no checkpointing)
    ckpt: np.ndarray  # bool: gradient checkpointing on
    full: np.ndarray  # bool: full fine-tuning (trainable base weights)
    root_bytes: np.ndarray  # embeddings + LM head (+ final norm): FSDP's root unit, in storage bytes
    layer_bytes: np.ndarray  # one decoder layer's weights + adapters, in storage bytes
    tied: np.ndarray  # bool: tied input/output embeddings
    tail_bytes: np.ndarray  # accelerate's tail unit: final norm + LM head (tied: + the embedding), storage bytes
    layer_grad_bytes: np.ndarray  # one decoder layer's gradients (full fine-tuning; else 0)
    unit_max_bytes: np.ndarray  # the largest FSDP unit in storage bytes (embedding, or LM head + final norm)
    units: np.ndarray  # FSDP units: decoder layers + embedding + tail (+ the root's leftovers, not counted)
    trainable_params: np.ndarray
    gap_fraction: float  # memory coefficient reserved_gap_fraction (gap share proportional to the peak)
    # reserved - allocated of one FSDP rank from the simulated three-stream sequence
    # (ftcalc/model/allocsim/fsdp.py) at this candidate's GPU count and strategy; NaN where not simulated
    # (set by ftcalc.model.parallel.estimate_parallel; a builder that leaves it empty gets NaN)
    gap_fsdp: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # FSDP (ftcalc's sharded build): the tie is lost (module.to_empty gives the embedding and the LM head
    # their own tensors), so the sharded model has the embedding's parameters twice: their share of the
    # sharded weights' bytes (of the parameters where all have one dtype; sharded QLoRA: the bf16 embedding
    # beside the 4-bit Linears), 0 for untied models. Measured: plans n and o, 1.80e9 local parameters per rank of
    # Llama-3.2-3B on 2 GPUs = (3.21e9 + 0.39e9) / 2
    untied_share: np.ndarray = field(default_factory=lambda: np.zeros(0))
    # the part of ``weights`` every rank holds whole under FSDP: the 4-bit Linears' quantization state of
    # sharded QLoRA (ftcalc.train.recipe._fill_linear4bit_shards keeps it on each module; FSDP2 shards only the
    # packed rows). 0 elsewhere
    quant_state: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        if np.size(self.gap_fsdp) == 0 and np.size(self.weights) > 0:
            object.__setattr__(self, "gap_fsdp", np.full(np.shape(self.weights), np.nan))
        for name in ("untied_share", "quant_state"):
            if np.size(getattr(self, name)) == 0 and np.size(self.weights) > 0:
                object.__setattr__(self, name, np.zeros(np.shape(self.weights)))

    @property
    def gathered_weights(self) -> Any:
        """What FSDP all-gathers of the model: the weights (in storage) and adapters, less the replicated
        quantization state."""
        return self.weights - self.quant_state + self.adapters

    def untie(self, sharding: Any) -> Any:
        """The factor on the weights under ``sharding``: 1 + ``untied_share`` under FSDP, 1 otherwise."""
        return 1.0 + np.where(_fsdp(np.asarray(sharding)), self.untied_share, 0.0)

    def untie_trainable(self, sharding: Any) -> Any:
        """The same factor on what is trained (gradients, optimizer states, the update): full fine-tuning only."""
        return np.where(self.full, self.untie(sharding), 1.0)

    def take(self, i: Any) -> ModelStates:
        """The states of configuration(s) ``i`` (an index or an index array)."""
        kw = {k: (v if k == "gap_fraction" else np.asarray(v)[i]) for k, v in self.__dict__.items()}
        return ModelStates(**kw)


def _phases(st: ModelStates, sharding: Any, num_gpus: Any, grad_accum: Any) -> tuple[Any, Any, Any, Any, Any]:
    """Allocated bytes per GPU at the loss, in a layer's backward and at the optimizer step, DDP's buckets,
    and the gradient shards held at each phase's peak (FSDP: on the reduce-scatter stream)."""
    n = np.asarray(num_gpus, dtype=float)
    sh = np.asarray(sharding)
    fsdp = _fsdp(sh)
    accum = np.asarray(grad_accum) > 1
    keep = _keep(sh, n)
    states = st.weights + st.adapters + st.opt_states
    u, u_train = st.untie(sh), st.untie_trainable(sh)  # FSDP: the embedding's parameters twice (tied models)
    states_g = ((st.weights - st.quant_state) * u + st.adapters + st.opt_states * u_train) * keep + st.quant_state
    grads_g = st.grads * u_train * keep
    # units gathered in full beside the own shard (which is in states_g): at the loss the tail unit and the
    # last layer (prefetched for backward); in a layer's backward the current and the prefetched layer (and
    # a tied tail, which holds the embedding used last). Shard-grad-op keeps every unit gathered from its
    # forward to its backward: the whole model at the loss and when backward starts, while the (sharded)
    # gradients grow as the gathered layers are released, so its backward peaks at either end. Under
    # offload the shard is on the host: the same gathered units, nothing beside them.
    grad_op = sh == FSDP_GRAD_OP
    whole = st.weights + st.adapters
    g_layer = np.where(fsdp, 2.0 * st.layer_bytes + np.where(st.tied, st.tail_bytes, 0.0), 0.0)
    g_loss = np.where(grad_op, whole, np.where(fsdp, st.tail_bytes + st.layer_bytes, 0.0))
    unit_grad = np.where(fsdp & st.full, st.layer_grad_bytes, 0.0)
    loss = st.phase_loss - states + states_g + np.where(accum, grads_g, 0.0) + g_loss
    x = st.act_x
    ck_base = st.phase_layer - states - st.grads + states_g
    layer_ckpt = ck_base + np.where(grad_op, np.maximum(whole, grads_g + g_layer), grads_g + g_layer)
    nk_base = st.phase_layer - states - np.maximum(x, st.grads) + states_g
    nk_grads = np.where(accum, x + grads_g, np.maximum(x, grads_g)) + g_layer
    layer_nockpt = nk_base + np.where(grad_op, np.maximum(x + whole, np.where(accum, x, 0.0) + grads_g + g_layer),
                                      nk_grads)
    layer = np.where(st.ckpt, layer_ckpt, layer_nockpt) + unit_grad
    # the embedding's backward closes the backward (its transient is not sharded: the full gradient is
    # computed before FSDP reduce-scatters it)
    layer = np.maximum(layer, st.phase_emb - states - st.grads + states_g + grads_g)
    opt = st.phase_opt - states - st.grads - st.step_tmp + states_g + grads_g + st.step_tmp * keep
    bucket = np.where(sh == DDP, st.grads, 0.0)
    return loss, layer, opt, bucket, np.where(accum, grads_g, 0.0)


def allocated_per_gpu(st: ModelStates, sharding: Any, num_gpus: Any, grad_accum: Any) -> Any:
    """Peak allocated bytes per GPU (what ``torch.cuda.max_memory_allocated`` reports on each rank).

    The single-GPU phases of ftcalc.model.memory with the model states replaced as the module docstring says:
    sharded 1/N under FSDP, the gathered units in full, DDP's gradient buckets.
    """
    loss, layer, opt, bucket, _ = _phases(st, sharding, num_gpus, grad_accum)
    out = np.maximum(np.maximum(loss, layer), opt) + bucket
    return out if np.ndim(out) else float(out)


def compute_stream_peak(st: ModelStates, sharding: Any, num_gpus: Any, grad_accum: Any) -> Any:
    """Peak allocated bytes of an FSDP rank's compute (default) stream: the phases of
    :func:`allocated_per_gpu` less the gradient shards, which FSDP2 allocates on its reduce-scatter stream
    (the reduce-scatter output is the sharded ``.grad``; t-fsdp8, docs/notes/allocator.md)."""
    n = np.asarray(num_gpus, dtype=float)
    loss, layer, opt, _, accum_grads = _phases(st, sharding, num_gpus, grad_accum)
    grads_g = st.grads * _keep(np.asarray(sharding), n)
    out = np.maximum(np.maximum(loss - accum_grads, layer - grads_g), opt - grads_g)
    return out if np.ndim(out) else float(out)


def _keep(sh: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Share of the model states resident on this GPU: all, 1/N (FSDP), none (offloaded to the host)."""
    return np.where(sh == FSDP_OFFLOAD, 0.0, np.where(_fsdp(sh), 1.0 / n, 1.0))


def device_used_per_gpu(st: ModelStates, sharding: Any, num_gpus: Any, grad_accum: Any,
                        nccl_buffer_bytes: float) -> Any:
    """Device memory used per GPU (what nvidia-smi shows), unconstrained, for each candidate.

    ``st`` holds one configuration per candidate (already indexed); ``sharding`` is SINGLE/DDP/FSDP/
    FSDP_OFFLOAD/FSDP_GRAD_OP. With ``sharding=SINGLE`` and ``grad_accum=1`` it returns estimate_memory's
    device_used_bytes exactly. Peak allocated (``allocated_per_gpu``) + the caching allocator's
    fragmentation + what lives outside the allocator (context, NCCL).
    """
    sh = np.asarray(sharding)
    n = np.asarray(num_gpus, dtype=float)
    peak = np.asarray(allocated_per_gpu(st, sh, num_gpus, grad_accum))
    keep = _keep(sh, n)
    # fragmentation: on one GPU the single-GPU estimate's own (the allocator simulation for supported full
    # fine-tuning); under DDP the simulation of one rank's sequence (its gradient buckets are rebuilt at the
    # second step into the holes the first left: run t-ddp3's trace, docs/notes/allocator.md)
    gap = np.where(sh == SINGLE, st.gap_single, st.gap_ddp)
    used = peak + gap
    # FSDP (full-shard, shard-grad-op; rank 0's trace t-fsdp8, docs/notes/allocator.md "FSDP trace: three streams"): the
    # allocator keeps a pool per stream and its reservation only grows, so the peak reserved is the sum of the
    # three streams' reservations. Where the three-stream sequence was simulated (gap_fsdp, full fine-tuning):
    # peak + its gap. Elsewhere: the compute stream's peak plus the one-GPU estimate's fragmentation (its
    # share proportional to the peak following the smaller peak), plus the collective streams' pools
    fsdp = _fsdp(sh) & (sh != FSDP_OFFLOAD)
    c_peak = np.asarray(compute_stream_peak(st, sh, num_gpus, grad_accum))
    c_gap = np.maximum(st.gap_single - st.gap_fraction * (st.peak - c_peak), 0.0)
    analytic = c_peak + c_gap + collective_pool_bytes(st, sh, num_gpus)
    simulated = peak + np.nan_to_num(st.gap_fsdp)
    used = np.where(fsdp, np.where(np.isnan(st.gap_fsdp), np.maximum(analytic, peak), simulated), used)
    # FSDP CPU offload: weights, gradients and optimizer states live on the host, so what splits the compute
    # stream's segments on one GPU (long-lived gradients and states placed in freed loss blocks) is absent:
    # the fitted gap's transient terms only (logits, activations), plus the all-gather stream's pool. Plan n
    # (2xH200): compute-stream gap 2.5-2.9 GiB measured for full fine-tuning and LoRA alike
    off = sh == FSDP_OFFLOAD
    used = np.where(off, peak + st.gap_transient + collective_pool_bytes(st, sh, num_gpus), used)
    out = used + outside_allocator_bytes(st, sh, keep, nccl_buffer_bytes)
    return out if np.ndim(out) else float(out)


def collective_pool_bytes(st: ModelStates, sharding: Any, num_gpus: Any = 2.0) -> Any:
    """Bytes FSDP2 holds reserved in its collective streams' own pools of the caching allocator.

    Mechanism from rank 0's trace t-fsdp8 (docs/notes/allocator.md "FSDP trace: three streams"): FSDP2 all-gathers each
    unit into a flat buffer of the unit's full size on its all-gather stream (two alive at a time in forward:
    the next unit's is allocated before the previous one's copy-out has finished) and allocates each unit's
    gradient shard, the reduce-scatter output that becomes the sharded ``.grad``, on its reduce-scatter
    stream (freed by zero_grad, its blocks cached there for the next step). A stream's free blocks serve only
    that stream. Simulated per distinct (units, N) by ``alloc_sequence_fsdp.collective_pool_bytes`` (cached);
    units: the input embedding, the decoder layers, the tail, in storage bytes. Under CPU offload only the
    all-gather buffers (the gradient shards go to the host).
    """
    from ftcalc.model.allocsim.fsdp import collective_pool_bytes as pools

    sh = np.asarray(sharding)
    n = np.broadcast_to(np.asarray(num_gpus, dtype=float), np.shape(st.weights))
    shb = np.broadcast_to(sh, np.shape(st.weights))
    embed = np.maximum(st.root_bytes - st.tail_bytes, 0.0)
    layers = st.units - 2.0
    full = np.asarray(st.full, dtype=bool)
    layer_grad = np.where(full, st.layer_grad_bytes, st.adapters / np.maximum(layers, 1.0))
    keys = np.stack(np.broadcast_arrays(embed, st.layer_bytes, st.tail_bytes, layers, n,
                                        np.where(full, embed, 0.0), layer_grad, np.where(full, st.tail_bytes, 0.0),
                                        np.where(shb == FSDP_GRAD_OP, 1.0, 0.0),
                                        np.where(shb == FSDP_OFFLOAD, 1.0, 0.0)), axis=-1).reshape(-1, 10)
    fsdp = _fsdp(shb).reshape(-1)
    out = np.zeros(keys.shape[0])
    if fsdp.any():
        uniq, inv = np.unique(keys[fsdp], axis=0, return_inverse=True)
        vals = np.empty(len(uniq))
        for j, (e, lb, tb, nl, ng, eg, lg, tg, op, offl) in enumerate(uniq):
            ag, rs = pools(int(e), int(lb), int(tb), int(nl), int(ng), int(eg), int(lg), int(tg),
                           reshard_after_forward=not op)
            vals[j] = ag + (0 if offl else rs)
        out[fsdp] = vals[np.ravel(inv)]
    out = out.reshape(np.shape(st.weights)) if np.ndim(st.weights) else out[0]
    return out if np.ndim(out) else float(out)


def outside_allocator_bytes(st: ModelStates, sharding: Any, keep: Any, nccl_buffer_bytes: float) -> Any:
    """CUDA context and workspaces, paged optimizer states on the device, and NCCL's own buffers."""
    return st.context + st.opt_paged * keep + np.where(np.asarray(sharding) != SINGLE, nccl_buffer_bytes, 0.0)


def host_bytes_offload(st: ModelStates) -> Any:
    """Host RAM that FSDP CPU offload needs for the whole job: parameters, gradients, optimizer states and
    the optimizer's temporaries of every rank (all ranks of a node share its RAM)."""
    return (st.weights * st.untie(FSDP_OFFLOAD) + st.adapters
            + (st.grads + st.opt_states + st.step_tmp) * st.untie_trainable(FSDP_OFFLOAD) + st.opt_paged)


def link_efficiency(interconnect: str, a: Assumptions) -> float:
    """The achieved NCCL share of a GPU's interconnect bandwidth (solver_assumptions.json link_efficiency)."""
    return a.link_efficiency.get(interconnect, a.link_efficiency.get("none", 0.3))


def comm_bandwidth_bytes_per_s(interconnect_gbps: Any, link_efficiency: Any, p2p: Any, num_instances: Any,
                               a: Assumptions) -> Any:
    """Achieved per-GPU, one-direction collective bandwidth in bytes/s.

    gpus.csv ``interconnect_gbps`` is bidirectional: half of it per direction, times the achieved NCCL
    share; without P2P, ``no_p2p_factor`` of that; across nodes, capped at the inter-node link.
    """
    bw = np.asarray(interconnect_gbps, dtype=float) / 2.0 * np.asarray(link_efficiency, dtype=float)
    bw = np.where(np.asarray(p2p, dtype=bool), bw, bw * a.no_p2p_factor)
    inter = a.inter_node_gbps_per_gpu * a.link_efficiency.get("nvlink", 0.8)
    bw = np.where(np.asarray(num_instances) > 1, np.minimum(bw, inter), bw)
    out = bw * 1e9
    return out if np.ndim(out) else float(out)


def step_seconds_parallel(times: StepParts, sharding: Any, num_gpus: Any, grad_accum: Any,
                          gather_bytes: Any, grad_bytes: Any, trainable_params: Any, num_instances: Any,
                          bandwidth_bytes_per_s: Any, a: Assumptions, units: Any = 0.0,
                          untie: Any = 1.0, memory_bandwidth_bytes_per_s: Any = None) -> tuple[Any, Any]:
    """Seconds per optimizer step on each GPU, and the compute-only part of it (for scaling efficiency).

    Args:
        times: one micro-batch's forward + backward on one GPU (GPU and host-launch sides) and the
            optimizer update's time on one GPU holding all states (ftcalc.model.throughput.step_parts).
        gather_bytes: weight + adapter bytes FSDP all-gathers (storage dtype).
        grad_bytes: gradient bytes (all-reduced / reduce-scattered).
        trainable_params: for the CPU optimizer under offload.
        units: FSDP units (ModelStates.units), for the fixed cost per collective.
        untie: the factor on the trainable parameters under FSDP (``ModelStates.untie_trainable``: tied
            embeddings are untied by the sharded build), for the optimizer update.
        memory_bandwidth_bytes_per_s: the GPU's memory bandwidth, for FSDP's all-gather copy-out on the compute
            stream (None: not counted).
    """
    n = np.asarray(num_gpus, dtype=float)
    sh = np.asarray(sharding)
    ga = np.asarray(grad_accum, dtype=float)
    fsdp = _fsdp(sh)
    off = sh == FSDP_OFFLOAD
    ring = (n - 1.0) / n
    micro_batch_s = times.micro_batch_s
    optimizer_s = times.optimizer_s
    # FSDP: each rank updates its 1/N of every tensor (the embedding twice for tied models: untie); the
    # per-tensor host work stays whole
    host_s = np.asarray(times.optimizer_host_s, dtype=float)
    opt_fsdp = (optimizer_s - host_s) * untie / n + host_s
    hide = a.comm_overlap * micro_batch_s
    # DDP: the gradient all-reduce of the last micro-batch (no_sync before) in 25 MB buckets, below the
    # large-message rate, exposed in full: it did not overlap the backward's compute in the NCCL benchmark
    # (lab/benchmarks/nccl_bench.py, data/solver_assumptions.json ddp_bucket_share / ddp_comm_overlap), nor did it
    # hide behind a launch-bound backward (Llama-3-8B at 1024 tokens: j-008 0.48 s per step on 2 GPUs
    # against 0.43 s for j-004 on one; 4 GPUs: g-005 0.49 s against g1-001 0.40 s)
    share = np.where(n <= 2.0, a.ddp_bucket_share["2"], a.ddp_bucket_share["4"])
    ddp_exposed = np.maximum(2.0 * ring * grad_bytes / (bandwidth_bytes_per_s * share)
                             - a.ddp_comm_overlap * micro_batch_s, 0.0)
    gathers = np.where(sh == FSDP_GRAD_OP, 1.0, 2.0)  # shard-grad-op: no re-gather in backward
    # FSDP's collectives hide behind the compute of their own phase: the forward's all-gathers (one per unit)
    # behind the first forward, the backward's (re-gather, unless shard-grad-op) and the reduce-scatters behind
    # the backward with its recompute; a forward that moves the whole model behind a third (LoRA) or a quarter
    # (full, checkpointed) of the compute exposes what the backward would have hidden
    fwd_share = np.asarray(times.forward_share, dtype=float)
    comm_fwd = ring * gather_bytes / bandwidth_bytes_per_s
    comm_bwd = ring * ((gathers - 1.0) * gather_bytes + grad_bytes) / bandwidth_bytes_per_s
    hide_fwd, hide_bwd = hide * fwd_share, hide * (1.0 - fwd_share)
    fsdp_exposed = np.maximum(comm_fwd - hide_fwd, 0.0) + np.maximum(comm_bwd - hide_bwd, 0.0)
    # the hidden part is not free: while a collective runs beside the matmuls its NCCL kernel holds some of
    # the SMs (24 of an H100's 132 for an all-gather), so the compute stream runs that much slower
    # (comm_contention, data/solver_assumptions.json)
    contention = a.comm_contention * (np.minimum(comm_fwd, hide_fwd) + np.minimum(comm_bwd, hide_bwd))
    # offload: the GPU's parameter shard copied in for each all-gather (2 per micro-batch), its gradient
    # shard copied out, all over the host link, not overlapped
    offload_copy = (2.0 * gather_bytes + grad_bytes) / n / (a.offload_host_gbps * 1e9)
    # offload: each rank steps its own parameter shard on the host (measured rate per rank, run n-001)
    cpu_step = trainable_params * untie / n / a.cpu_optimizer_params_per_s_per_gpu
    # FSDP's fixed cost per unit and collective (all-gather in forward, again in backward, reduce-scatter):
    # hooks, copy-in/copy-out and stream waits that do not hide behind compute (measured, docs/multi-gpu.md)
    latency = (gathers + 1.0) * np.asarray(units, dtype=float) * a.fsdp_collective_latency_s
    # FSDP2 copies each all-gather's output into the unsharded parameters on the compute stream
    # (FSDPParamGroup.wait_for_unshard -> foreach_all_gather_copy_out, torch 2.11): every gathered byte read and
    # written once more, in series with the compute, not hidden like the collective itself
    copy_out = 0.0 if memory_bandwidth_bytes_per_s is None else \
        gathers * 2.0 * gather_bytes / np.asarray(memory_bandwidth_bytes_per_s, dtype=float)
    per_micro = (micro_batch_s + np.where(fsdp, fsdp_exposed + contention + latency + copy_out, 0.0)
                 + np.where(off, offload_copy, 0.0))
    opt = np.where(off, cpu_step, np.where(fsdp, opt_fsdp, optimizer_s))
    step = ga * per_micro + np.where(sh == DDP, ddp_exposed, 0.0) + opt
    compute = ga * micro_batch_s + np.where(off, 0.0, np.where(fsdp, opt_fsdp, optimizer_s))
    if not np.ndim(step):
        return float(step), float(compute)
    return step, compute


def startup_seconds(checkpoint_file_bytes: Any, a: Assumptions) -> Any:
    """Provisioning, downloading the bf16 checkpoint, loading it onto the GPUs (each node in parallel)."""
    return (a.provisioning_s + checkpoint_file_bytes / (a.weights_download_gbps * 1e9)
            + checkpoint_file_bytes / (a.weights_load_gbps * 1e9))


def checkpoint_seconds(train_s: Any, checkpoint_bytes: Any, num_instances: Any, a: Assumptions) -> Any:
    """Saving what a resume needs (trainable weights + optimizer states) every ``checkpoint_interval_s``
    and once at the end; each node writes its share."""
    saves = np.floor(np.asarray(train_s, dtype=float) / a.checkpoint_interval_s) + 1.0
    out = saves * checkpoint_bytes / (np.asarray(num_instances, dtype=float) * a.checkpoint_write_gbps * 1e9)
    return out if np.ndim(out) else float(out)
