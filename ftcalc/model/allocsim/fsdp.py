"""The allocation sequence of one FSDP2 rank, on its three CUDA streams, generated from the model config.

    >>> from ftcalc.model.allocsim.fsdp import simulate_fsdp
    >>> sim = simulate_fsdp(resolve_model("8b"), make_options(method="full", seq_len=2048, batch_size=2), 4)
    >>> sim.peak_reserved / 2**30, sim.reserved_by_stream

A mechanism model of what ``fully_shard`` (torch.distributed.fsdp, FSDP2, as accelerate 1.15's
``fsdp2_prepare_model`` wraps a causal LM: one unit per decoder layer, one for the input embedding, a tail unit
[final norm, LM head] not resharded after forward) asks of the caching allocator, read off rank 0's trace of
4-GPU Llama-3-8B full fine-tuning (``data/traces/fsdp/t-fsdp8.json.gz``, docs/notes/allocator.md
"FSDP trace: three streams"). Three streams, and the allocator keeps a pool per stream (ftcalc/model/allocsim/allocator.py):

- **all-gather stream** (``ALL_GATHER``): each unit is all-gathered into one flat buffer of the unit's full
  size (``foreach_all_gather``); the buffer is freed once the copy-out into the parameters has run, which in
  forward is after the *next* unit's buffer was allocated (prefetch: two buffers alive at a time), in
  backward before it (one at a time).
- **reduce-scatter stream** (``REDUCE_SCATTER``): each unit's gradient shard (the reduce-scatter output,
  1/N of the unit) is allocated there and *is* the sharded ``.grad`` until ``zero_grad(set_to_none=True)``
  frees it; the next step's shards reuse those blocks, so this pool holds the gradient shards' segments
  whether they are alive (backward, optimizer) or not (forward, loss).
- **compute stream** (``COMPUTE``, the default stream): the parameter shards (build), the unsharded
  parameters of a gathered unit (one block per parameter, ``all_gather_outputs``; freed at reshard, after the
  unit's forward, or after its backward), the activations and loss tensors (ftcalc/model/allocsim/sequence.py, the
  one-GPU op model), the unsharded gradients (one block per parameter, as autograd makes them), the
  reduce-scatter input (one flat block of the unit's size, freed just before the next unit's is allocated),
  and the optimizer states and temporaries of the shards.

Covered: full fine-tuning of untied Llama-style decoders (what ``alloc_sequence.simulation_supported``
covers), full-shard and shard-grad-op (``reshard_after_forward=False``: no re-gather in backward, the
parameters freed after the unit's backward). :func:`collective_pool_bytes` gives the two collective streams'
reservation alone (any method, LoRA included: only the unit sizes matter); it is what ftcalc.model.sharding adds to
the compute stream's estimate where the full sequence is not covered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from ftcalc.model.allocsim.allocator import simulate_peaks
from ftcalc.model.allocsim.sequence import (  # the one-GPU op model: forward/backward of a decoder layer, loss, optimizer
    Dims,
    _layer_bwd,
    _layer_fwd,
    _loss_bwd,
    _loss_fwd,
    _norm_bwd,
    _norm_fwd,
    _optimizer,
    _params,
    _Seq,
    dims_for,
)

__all__ = ["COMPUTE", "ALL_GATHER", "REDUCE_SCATTER", "fsdp_step_sequence", "simulate_fsdp", "FsdpSim",
           "collective_pool_bytes", "fsdp_sequence_supported"]

COMPUTE, ALL_GATHER, REDUCE_SCATTER = 0, 1, 2  # stream ids of the simulation


class _SSeq(_Seq):
    """``_Seq`` with a stream per allocation (the ops of alloc_sequence allocate on the current stream)."""

    def __init__(self) -> None:
        super().__init__()
        self.stream = COMPUTE

    def a(self, nbytes: int) -> int:
        i = next(self._ids)
        self.req.append(("alloc", i, int(nbytes), self.stream))
        return i

    def on(self, stream: int, nbytes: int) -> int:
        """Allocate on another stream (the current one unchanged)."""
        i = next(self._ids)
        self.req.append(("alloc", i, int(nbytes), stream))
        return i


class _Collectives:
    """One step's all-gathers and reduce-scatters on the request list ``s`` (order read off t-fsdp8: module
    docstring): each unit's flat all-gather buffer, freed after the next unit's is allocated in forward and
    before it in backward; each unit's reduce-scatter input on the compute stream (freed before the next one),
    its gradient shard on the reduce-scatter stream (alive until zero_grad, :meth:`zero_grad`)."""

    def __init__(self, s: _SSeq, num_gpus: int) -> None:
        self.s, self.num_gpus = s, num_gpus
        self.buffer: int | None = None  # the all-gather buffer alive
        self.rs_input: int | None = None
        self.shards: list[int] = []

    def gather(self, unit_bytes: int, param_bytes: list[int], forward: bool) -> list[int]:
        """Unshard a unit: its all-gather buffer, then the parameters copied out of it (one block each)."""
        s = self.s
        if not forward:
            self.release()
        buf = s.on(ALL_GATHER, unit_bytes)
        params = [s.a(nbytes) for nbytes in param_bytes]
        s.f(self.buffer)
        self.buffer = buf
        return params

    def release(self) -> None:
        """Free the all-gather buffer alive."""
        self.s.f(self.buffer)
        self.buffer = None

    def reduce(self, unit_bytes: int, grads: list[int] = ()) -> None:
        """Post-backward of a unit whose gradients take ``unit_bytes``: the reduce-scatter input, the unsharded
        gradients ``grads`` freed after the copy-in, the gradient shard."""
        s = self.s
        s.f(self.rs_input)
        self.rs_input = s.a(unit_bytes)
        s.f(*grads)
        self.shards.append(s.on(REDUCE_SCATTER, -(-unit_bytes // self.num_gpus)))

    def end_backward(self) -> None:
        """Free the last reduce-scatter input."""
        self.s.f(self.rs_input)
        self.rs_input = None

    def zero_grad(self) -> None:
        """zero_grad(set_to_none=True): the gradient shards."""
        self.s.f(*self.shards)
        self.shards = []


def _shard(numel: int, n: int) -> int:
    """Elements of one rank's shard (FSDP2 pads each parameter to a multiple of N, ``_chunk_with_empty``)."""
    return -(-numel // n)


def fsdp_sequence_supported(spec, opts) -> bool:
    """True when :func:`fsdp_step_sequence` models the configuration: full fine-tuning, untied embeddings,
    the decoders, attention, loss and optimizers the one-GPU sequence covers, one micro-batch per step."""
    from ftcalc.model.allocsim.coverage import simulation_supported

    return (opts.method == "full" and not spec.arch.tie_word_embeddings
            and opts.gradient_accumulation_steps == 1 and simulation_supported(spec.arch, opts, "sdpa"))


def _units(d: Dims) -> tuple[list[tuple[str, int]], list[list[tuple[str, int]]], list[tuple[str, int]]]:
    """(embedding unit, decoder-layer units, tail unit): each a list of (parameter, numel) in module order."""
    ps = _params(d)
    layers = [[p for p in ps if p[0].split(".")[0] == str(li)] for li in range(d.layers)]
    tail = [p for p in ps if p[0] in ("norm", "lm_head")]
    return [ps[0]], layers, tail


def fsdp_step_sequence(spec, opts, num_gpus: int, steps: int = 2, reshard_after_forward: bool = True,
                       include_build: bool = True) -> list[tuple]:
    """The requests (``("alloc", id, nbytes, stream)`` / ``("free", id, 0)`` / ``("reset", 0, 0)``) of one
    FSDP2 rank: building the sharded model and ``steps`` training steps (order as in t-fsdp8, see the module
    docstring). Untied full fine-tuning only (:func:`fsdp_sequence_supported`)."""
    d = dims_for(spec, opts)
    n, h, c, w = d.n, d.h, 2, d.wbytes
    s = _SSeq()
    emb_unit, layer_units, tail_unit = _units(d)
    shards = [(name, _shard(numel, num_gpus)) for name, numel in _params(d)]
    if include_build:
        for _, numel in shards:
            s.a(numel * w)
    s.req.append(("reset", 0, 0))
    states: dict = {}

    def unit_bytes(unit: list[tuple[str, int]]) -> int:
        return sum(_shard(numel, num_gpus) * num_gpus for _, numel in unit) * w

    for k in range(steps):
        col = _Collectives(s, num_gpus)

        def gather(unit, forward: bool, col: _Collectives = col) -> list[int]:
            return col.gather(unit_bytes(unit), [numel * w for _, numel in unit], forward)

        def reduce(unit, grads: list[int], col: _Collectives = col) -> None:
            col.reduce(unit_bytes(unit), grads)

        # forward
        p_emb = gather(emb_unit, True)
        emb = s.a(n * h * d.abytes)
        if reshard_after_forward:
            s.f(*p_emb)
        x = emb
        saved, inputs, p_layers = [], [], []
        for li in range(d.layers):
            p_layers.append(gather(layer_units[li], True))
            out, sv = _layer_fwd(s, d, x, keep=not d.checkpointing, free_input=x != emb and not d.checkpointing)
            if reshard_after_forward:
                s.f(*p_layers[li])
            saved.append(sv)
            inputs.append(x)
            x = out
        p_tail = gather(tail_unit, True)  # the tail is not resharded after forward (accelerate)
        yf, nf = _norm_fwd(s, d, keep=True)
        s.f(x)
        if d.mixed:
            wlm = s.a(d.vocab * h * 2)
        logits, l32, lsm = _loss_fwd(s, n, d.vocab, c)
        s.f(l32)
        s.f(logits)
        col.release()  # the tail's buffer
        if not d.checkpointing:
            s.f(emb)
        gb = _loss_bwd(s, n, d.vocab, c, lsm)
        g_lm = s.a(d.vocab * h * w)
        dy = s.a(n * h * c)
        s.f(gb)
        if d.mixed:
            s.f(wlm)
        dy2 = _norm_bwd(s, d, dy, nf)
        s.f(dy, yf)
        dy = dy2
        g_norm = s.a(h * w)
        s.f(*p_tail)
        reduce(tail_unit, [g_norm, g_lm])
        # backward, layer by layer
        for li in reversed(range(d.layers)):
            if reshard_after_forward:
                p_layers[li] = gather(layer_units[li], False)
            sv = saved[li]
            if d.checkpointing:
                _, sv = _layer_fwd(s, d, inputs[li], keep=True, stop_early=True)
                s.f(sv.pop("h1"))
            grads: dict = {}
            dy = _layer_bwd(s, d, li, dy, sv, grads)
            grads.update({f"{li}.norm{j}": s.a(h * w) for j in range(d.norms_per_layer)})
            if d.checkpointing:
                s.f(inputs[li] if li > 0 else None)
            if d.checkpointing and li == 0:
                s.f(emb)
            s.f(*p_layers[li])
            reduce(layer_units[li], list(grads.values()))
        col.release()
        if reshard_after_forward:
            p_emb = gather(emb_unit, False)
        ge = s.a(d.vocab * h * w)
        s.f(dy)
        s.f(*p_emb)
        col.release()
        reduce(emb_unit, [ge])
        col.end_backward()
        _optimizer(s, d, shards, {}, states, first=(k == 0))
        col.zero_grad()
    return s.req


@dataclass
class FsdpSim:
    """Simulated peaks of one FSDP rank (bytes) and the reservation of each stream at the end."""

    peak_allocated: int
    peak_reserved: int
    reserved_by_stream: dict[int, int] = field(default_factory=dict)

    @property
    def gap(self) -> int:
        """Peak reserved minus peak allocated."""
        return self.peak_reserved - self.peak_allocated


def simulate_fsdp(spec, opts, num_gpus: int, steps: int = 2, reshard_after_forward: bool = True) -> FsdpSim:
    """Generate one rank's sequence (:func:`fsdp_step_sequence`) and run it through the multi-stream
    caching-allocator model (:func:`ftcalc.model.allocsim.allocator.simulate_peaks`); peaks measured after the build, like
    ``ftcalc profile``."""
    peak_reserved, peak_allocated, by_stream = simulate_peaks(
        fsdp_step_sequence(spec, opts, num_gpus, steps, reshard_after_forward))
    return FsdpSim(peak_allocated, peak_reserved, by_stream)


@lru_cache(maxsize=4096)
def collective_pool_bytes(embed_bytes: int, layer_bytes: int, tail_bytes: int, layers: int, num_gpus: int,
                          embed_grad_bytes: int, layer_grad_bytes: int, tail_grad_bytes: int,
                          reshard_after_forward: bool = True) -> tuple[int, int]:
    """(all-gather stream, reduce-scatter stream) bytes the caching allocator holds for FSDP2's collectives.

    The two streams' part of :func:`fsdp_step_sequence`, simulated alone (streams never share blocks, so
    their reservation does not depend on the compute stream): the all-gather buffers of the units
    (embedding, layers, tail, in storage bytes; two alive at a time in forward, one in backward) and the
    gradient shards (``*_grad_bytes`` / N for the units that have gradients to reduce: full fine-tuning all,
    LoRA the adapters of each layer). Two steps; the second reuses every block. Cached.
    """
    req: list[tuple] = []
    ids = iter(range(1 << 30))
    units = [embed_bytes] + [layer_bytes] * layers + [tail_bytes]
    grads = [embed_grad_bytes] + [layer_grad_bytes] * layers + [tail_grad_bytes]
    for _ in range(2):
        prev = None
        for u in units:  # forward: the next unit's buffer is allocated before the previous one is freed
            i = next(ids)
            req.append(("alloc", i, u, ALL_GATHER))
            if prev is not None:
                req.append(("free", prev, 0))
            prev = i
        req.append(("free", prev, 0))
        if reshard_after_forward:  # backward re-gathers every layer and the embedding, one at a time
            for u in [layer_bytes] * layers + [embed_bytes]:
                i = next(ids)
                req += [("alloc", i, u, ALL_GATHER), ("free", i, 0)]
        out = []
        for g in reversed(grads):  # reduce-scatter outputs in backward order, alive until zero_grad
            if g > 0:
                i = next(ids)
                req.append(("alloc", i, -(-g // num_gpus), REDUCE_SCATTER))
                out.append(i)
        req += [("free", i, 0) for i in out]
    by = simulate_peaks(req)[2]
    return by.get(ALL_GATHER, 0), by.get(REDUCE_SCATTER, 0)
