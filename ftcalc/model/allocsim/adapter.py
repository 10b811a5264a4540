"""The allocation sequence of one FSDP2 rank training LoRA or sharded QLoRA adapters, from the model config.

    >>> from ftcalc.model.allocsim.adapter import simulate_adapter_fsdp
    >>> sim = simulate_adapter_fsdp(resolve_model("8b"), make_options(method="qlora", seq_len=2048), 2)
    >>> sim.gap / 2**30, sim.reserved_by_stream

The full fine-tuning sequence (ftcalc/model/allocsim/fsdp.py) with the op model of an adapted decoder layer
in place of a trained one, read off rank 0's traces of sharded QLoRA (t-fsdpq8: Llama-3-8B, t-fsdpq70:
Llama-3-70B, 2048 tokens on 2 H200) and of LoRA under FSDP (t-fsdpl8: Llama-3-8B, 2 x 4096 tokens)
in data/traces/fsdp, and off the code of peft's LoRA layers and bitsandbytes' ``MatMul4Bit``:

- **frozen base weights**: no weight gradients, and no Linear saves its input for one. The units hold the
  packed 4-bit rows (sharded QLoRA, bf16 storage) or the bf16 weights (LoRA), the adapters and the norms;
  only the adapters have gradient shards on the reduce-scatter stream.
- **a 4-bit base Linear** (``MatMul4Bit``, nf4 with double quantization): the first-level absmax
  dequantized into two fp32 transients of numel / 16 bytes, the weight dequantized to bf16 (numel x 2), the
  matmul, the transients freed; peft's ``lora.bnb.Linear4bit`` clones the result ("defensively", its code
  says). The backward dequantizes again for the input gradient.
- **the adapter path** of peft's ``lora.Linear`` ``result + lora_B(lora_A(dropout(x))) * scaling``: with
  fp32 adapters (LoRA: peft's ``autocast_adapter_dtype``) the input is cast to fp32 and held until the
  Linear returns, the sum promotes to fp32 and is cast back to bf16; with bf16 adapters (sharded QLoRA)
  all of it is bf16. Saved for backward: the dropout mask (bool) and output (the input of lora_A) and
  lora_A's output; nothing of the base matmul.
- **frozen norms**: RMSNorm's ``weight * x.to(bf16)`` saves the weight, not the bf16 normalized input
  (full fine-tuning saves both), so the norm keeps only its fp32 input and rsqrt.
- checkpointed layers run the forward without saving and recompute it (saving) before their backward, up
  to the last saved tensor (down_proj's lora_A output); the backward runs node by node, the adapter branch
  of each Linear before its base (autograd runs the latest-created node first), the two input gradients
  summed in place into the first.

Covered (:func:`adapter_sequence_supported`): LoRA and sharded QLoRA under FSDP full-shard and shard-grad-op,
bf16-true, untied Llama-style decoders (q/k/v/o and gate/up/down Linears), SDPA, the standard loss, one
micro-batch per step. Elsewhere ``ftcalc.model.sharding`` keeps the one-GPU fit of the compute stream's gap.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ftcalc.model.allocsim.allocator import simulate_peaks
from ftcalc.model.allocsim.fsdp import FsdpSim, _Collectives, _shard, _SSeq
from ftcalc.model.allocsim.sequence import (
    CUBLAS_WORKSPACE_BYTES,
    _loss_bwd,
    _loss_fwd,
    _optimizer,
    _rotary_fwd,
    dims_for,
)
from ftcalc.tables.inventory import inventory

__all__ = ["adapter_fsdp_step_sequence", "simulate_adapter_fsdp", "adapter_sequence_supported"]


@dataclass(frozen=True)
class _Adapter:
    """What the adapter sequence depends on beyond ``Dims``."""

    r: int
    ab: int  # adapter bytes per element: 4 (LoRA, fp32 adapters), 2 (sharded QLoRA)
    qlora: bool
    double_quant: bool
    dropout: bool
    targets: frozenset  # adapted Linear kinds
    shapes: dict  # (in, out) features of each decoder Linear kind, in module order (ftcalc.tables.inventory)


def _adapter(spec, opts) -> _Adapter:
    """The :class:`_Adapter` of a model and its (strategy's) options."""
    shapes = {g.kind: (g.in_features, g.out_features) for g in inventory(spec.arch).linears}
    return _Adapter(r=opts.lora_r, ab=2 if opts.sharded_qlora else 4, qlora=opts.sharded_qlora,
                    double_quant=bool(opts.double_quant), dropout=opts.lora_dropout > 0,
                    targets=frozenset(k for k in shapes if opts.is_target(k)), shapes=shapes)


def adapter_sequence_supported(spec, opts) -> bool:
    """True when :func:`adapter_fsdp_step_sequence` models the configuration (module docstring)."""
    from ftcalc.model.allocsim.coverage import sequence_ops_covered
    from ftcalc.model.units import resolve_attention

    a = spec.arch
    return (opts.method == "lora" or opts.sharded_qlora) and opts.precision == "bf16-true" \
        and opts.optimizer in ("adamw_torch", "adamw_torch_fused") and not a.tie_word_embeddings \
        and not a.fused_qkv and not a.fused_gate_up and not a.qk_norm \
        and sequence_ops_covered(a, opts, resolve_attention(a, opts))


def _params(d, ad: _Adapter) -> tuple[list, list[list], list]:
    """(embedding unit, layer units, tail unit): lists of (name, bytes of the full parameter) in module order."""
    emb = [("embed", d.vocab * d.h * 2)]
    layers = []
    for li in range(d.layers):
        u = []
        for kind, (i, o) in ad.shapes.items():
            u.append((f"{li}.{kind}", i * o // 2 if ad.qlora else i * o * 2))
            if kind in ad.targets:
                u += [(f"{li}.{kind}.A", ad.r * i * ad.ab), (f"{li}.{kind}.B", o * ad.r * ad.ab)]
        u += [(f"{li}.norm{j}", d.h * 2) for j in range(d.norms_per_layer)]
        layers.append(u)
    tail = [("norm", d.h * 2), ("lm_head", d.vocab * d.h * 2)]
    return emb, layers, tail


def _quant_state_bytes(numel: int, double_quant: bool) -> int:
    from ftcalc.model.units import quantized_linear_bytes

    return int(quantized_linear_bytes(numel, double_quant) - numel / 2)


# ---------------------------------------------------------------------------- one adapted Linear


def _lin_fwd(s: _SSeq, d, ad: _Adapter, kind: str, save: bool) -> tuple[int, list[int]]:
    """Forward of one decoder Linear on the (caller-held) input; returns (output, saved tensors)."""
    n = d.n
    i, o = ad.shapes[kind]
    adapted = kind in ad.targets
    if ad.qlora:  # MatMul4Bit: absmax dequantized (two fp32 transients), the weight dequantized to bf16
        t = [s.a(i * o // 16), s.a(i * o // 16)] if ad.double_quant else []
        w = s.a(i * o * 2)
        out = s.a(n * o * 2)
        s.f(*reversed(t))
        s.f(w)
        if adapted:  # peft's lora.bnb.Linear4bit: result = result.clone()
            res = s.a(n * o * 2)
            s.f(out)
            out = res
    else:
        out = s.a(n * o * 2)
    if not adapted:
        return out, []
    xc = s.a(n * i * 4) if ad.ab == 4 else None  # _cast_input_dtype: held until the Linear returns
    mask = s.a(n * i) if ad.dropout else None
    dx = s.a(n * i * ad.ab) if ad.dropout else None
    if not save:
        s.f(mask)
    aout = s.a(n * ad.r * ad.ab)
    if not save:
        s.f(dx)
    bout = s.a(n * o * ad.ab)
    if not save:
        s.f(aout)
    sc = s.a(n * o * ad.ab)  # * scaling
    s.f(bout)
    # lora_A's saved input: the dropout's output, or without dropout the (cast) input itself
    a_in = dx if ad.dropout else xc
    if ad.ab == 4:  # bf16 result + fp32 adapter output -> fp32, cast back to bf16 after the loop
        tot = s.a(n * o * 4)
        s.f(out, sc)
        res = s.a(n * o * 2)
        s.f(tot)
        if not (save and a_in == xc):
            s.f(xc)
    else:
        res = s.a(n * o * 2)
        s.f(out, sc)
    return res, ([mask, a_in, aout] if save else [])


def _lin_bwd(s: _SSeq, d, ad: _Adapter, kind: str, g: int, saved: list[int], own: bool = True) -> int:
    """Backward of one decoder Linear from its output gradient ``g`` (freed here unless ``own`` is False: the
    residual gradient, shared); returns the input gradient (bf16). The adapter branch first, then the base;
    the two summed in place into the first."""
    n = d.n
    i, o = ad.shapes[kind]
    adapted = kind in ad.targets
    gx = None
    if adapted:
        mask, dx, aout = saved
        g32 = s.a(n * o * 4) if ad.ab == 4 else g  # ToCopyBackward of the cast back to bf16
        gs = s.a(n * o * ad.ab)  # MulBackward (scaling)
        ga = s.a(n * ad.r * ad.ab)  # lora_B's input gradient (its weight gradient is small)
        s.f(gs, aout)
        gd = s.a(n * i * ad.ab)  # lora_A's input gradient
        s.f(ga, dx)
        if ad.dropout:
            gdd = s.a(n * i * ad.ab)  # dropout backward: grad * mask * scale
            s.f(gd, mask)
            gd = gdd
        if ad.ab == 4:
            gx = s.a(n * i * 2)  # ToCopyBackward of the input cast
            s.f(gd)
            gb = s.a(n * o * 2)  # AddBackward: the bf16 result's gradient of the promoted sum
            if g32 != g:
                s.f(g32)
            g_base = gb
        else:
            gx = gd
            g_base = g
    else:
        g_base = g
    if ad.qlora:
        t = [s.a(i * o // 16), s.a(i * o // 16)] if ad.double_quant else []
        w = s.a(i * o * 2)
        gin = s.a(n * i * 2)
        s.f(*reversed(t))
        s.f(w)
    else:
        gin = s.a(n * i * 2)
    if g_base != g:
        s.f(g_base)
    if own:
        s.f(g)
    if gx is None:
        return gin
    s.f(gin)  # accumulated in place into the adapter branch's gradient
    return gx


# ---------------------------------------------------------------------------- one decoder layer


def _norm_fwd(s: _SSeq, d, save: bool) -> tuple[int, list[int]]:
    """RMSNorm with a frozen weight: saves the fp32 input (and rsqrt, small) when saving."""
    n, h = d.n, d.h
    x32 = s.a(n * h * 4)
    p = s.a(n * h * 4)
    var = s.a(n * 4)
    s.f(p)
    r = s.a(n * 4)
    m = s.a(n * h * 4)
    if not save:
        s.f(x32)
    xb = s.a(n * h * 2)
    y = s.a(n * h * 2)
    s.f(xb, m, var)
    if not save:
        s.f(r)
        return y, []
    return y, [x32, r]


def _norm_bwd(s: _SSeq, d, dy: int, saved: list[int]) -> int:
    """Frozen RMSNorm backward from ``dy`` (freed): dy * w, its fp32 cast, the rsqrt / pow chain; returns the
    bf16 input gradient."""
    n, h = d.n, d.h
    x32, r = saved
    dxb = s.a(n * h * 2)
    s.f(dy)
    dm = s.a(n * h * 4)
    s.f(dxb)
    pr = s.a(n * h * 4)
    dx = s.a(n * h * 4)
    s.f(pr, dm)
    dmean = s.a(n * h * 4)
    p1 = s.a(n * h * 4)
    p2 = s.a(n * h * 4)
    dpow = s.a(n * h * 4)
    s.f(p2, p1, dmean, x32, dpow, r)
    db = s.a(n * h * 2)
    s.f(dx)
    return db


def _layer_fwd(s: _SSeq, d, ad: _Adapter, x: int, save: bool, stop_early: bool = False,
               free_input: bool = False) -> tuple[int | None, dict]:
    """One adapted decoder layer forward from ``x``; ``save``: autograd saves (no checkpointing, or the
    recompute); ``stop_early``: the recompute ends at the last saved tensor; ``free_input``: nothing holds
    the input after the attention's residual add (no checkpoint frame, no saving node)."""
    n, c = d.n, 2
    sv: dict = {"lin": {}}
    y, sv["n1"] = _norm_fwd(s, d, save)
    q, sv["lin"]["q_proj"] = _lin_fwd(s, d, ad, "q_proj", save)
    k, sv["lin"]["k_proj"] = _lin_fwd(s, d, ad, "k_proj", save)
    v, sv["lin"]["v_proj"] = _lin_fwd(s, d, ad, "v_proj", save)
    rot = _rotary_fwd(s, d)
    s.f(q, k)
    o = s.a(n * d.q_dim * c)
    lse = s.a(d.b * d.heads * d.t * 4)
    po, sv["lin"]["o_proj"] = _lin_fwd(s, d, ad, "o_proj", save)
    if not save:  # the attention's locals die before the residual add
        s.f(o, lse, *rot, v)
    else:
        sv.update(v=v, rot=rot, o=o, lse=lse)
    s.f(y)
    h1 = s.a(n * d.h * c)
    s.f(po)
    if free_input:
        s.f(x)
    y2, sv["n2"] = _norm_fwd(s, d, save)
    g, sv["lin"]["gate_proj"] = _lin_fwd(s, d, ad, "gate_proj", save)
    act = s.a(n * d.inter * c)
    if not save:
        s.f(g)
    up, sv["lin"]["up_proj"] = _lin_fwd(s, d, ad, "up_proj", save)
    mul = s.a(n * d.inter * c)
    if not save:
        s.f(act, up)
    else:
        sv.update(g=g, act=act, up=up)
    dn, sv["lin"]["down_proj"] = _lin_fwd(s, d, ad, "down_proj", save)
    s.f(mul, y2)
    if stop_early:
        s.f(dn, h1)
        return None, sv
    out = s.a(n * d.h * c)
    s.f(dn, h1)
    return out, sv


def _layer_bwd(s: _SSeq, d, ad: _Adapter, dy: int, sv: dict) -> int:
    """One adapted decoder layer's backward from the output gradient ``dy`` (kept: the residual gradient,
    into which the block gradients are accumulated in place); returns it."""
    n, c = d.n, 2
    ni = n * d.inter * c
    lin = sv["lin"]
    da = _lin_bwd(s, d, ad, "down_proj", dy, lin["down_proj"], own=False)
    dup = s.a(ni)
    dact = s.a(ni)
    s.f(da, sv["up"], sv["act"])
    dx_up = _lin_bwd(s, d, ad, "up_proj", dup, lin["up_proj"])
    dg = s.a(ni)
    s.f(dact, sv["g"])
    dx_g = _lin_bwd(s, d, ad, "gate_proj", dg, lin["gate_proj"])
    s.f(dx_g)  # accumulated into dx_up
    s.f(_norm_bwd(s, d, dx_up, sv["n2"]))  # accumulated in place into dy
    do = _lin_bwd(s, d, ad, "o_proj", dy, lin["o_proj"], own=False)
    dq = s.a(n * d.q_dim * c)
    dk = s.a(n * d.kv_dim * c)
    dv = s.a(n * d.kv_dim * c)
    s.f(s.a(n * d.q_dim * 8 + d.b * d.heads * d.t * 4 + 256))  # flash-attention backward workspace
    qr, kr = sv["rot"]
    s.f(kr, qr, sv["v"], sv["lse"], sv["o"], do)
    rot = {}
    for name, src, dim in (("k", dk, d.kv_dim), ("q", dq, d.q_dim)):
        t1 = s.a(n * dim * c)
        ng = s.a(n * dim * c // 2)
        x = s.a(n * dim * c)
        s.f(ng)
        y = s.a(n * dim * c)
        s.f(t1, y)
        z = s.a(n * dim * c)
        s.f(src, z)
        rot[name] = x
    dx_v = _lin_bwd(s, d, ad, "v_proj", dv, lin["v_proj"])
    kc = s.a(n * d.kv_dim * c)
    s.f(rot["k"])
    dx_k = _lin_bwd(s, d, ad, "k_proj", kc, lin["k_proj"])
    acc = s.a(n * d.h * c)
    s.f(dx_v, dx_k)
    qc = s.a(n * d.q_dim * c)
    s.f(rot["q"])
    s.f(_lin_bwd(s, d, ad, "q_proj", qc, lin["q_proj"]))  # accumulated in place into acc
    s.f(_norm_bwd(s, d, acc, sv["n1"]))  # accumulated in place into dy
    return dy


# ---------------------------------------------------------------------------- the rank's sequence


def adapter_fsdp_step_sequence(spec, opts, num_gpus: int, steps: int = 2,
                               reshard_after_forward: bool = True) -> list[tuple]:
    """The requests of one FSDP2 rank training adapters (:func:`adapter_sequence_supported`): the sharded
    build, then ``steps`` steps (units gathered and resharded as in ``fsdp_step_sequence``)."""
    d = dims_for(spec, opts)
    ad = _adapter(spec, opts)
    n, h, c = d.n, d.h, 2
    s = _SSeq()
    emb_unit, layer_units, tail_unit = _params(d, ad)
    for unit in [emb_unit, *layer_units, tail_unit]:  # the build: every shard, then the quantization state
        for _, nbytes in unit:
            s.a(_shard(nbytes // 2, num_gpus) * 2)
    if ad.qlora:  # each Linear quantized on the device: its bf16 weight, absmax transients, the packed
        prev = None  # weight (freed after the next Linear's), the quantization state kept (t-fsdpq8's build)
        for _li in range(d.layers):
            for i, o in ad.shapes.values():
                w = s.a(i * o * 2)
                t1 = s.a(i * o // 16)
                packed = s.a(i * o // 2)
                t2 = s.a(i * o // 16)
                s.a(_quant_state_bytes(i * o, ad.double_quant))
                s.f(t2, t1, prev, w)
                prev = packed
        s.f(prev)
    s.req.append(("reset", 0, 0))
    adapters = [[(name, nb) for name, nb in u if name.endswith((".A", ".B"))] for u in layer_units]
    trainable = [(name, _shard(nb // 2, num_gpus) * 2 // ad.ab)  # the rank's shards of the adapters
                 for u in adapters for name, nb in u]
    grad_bytes = [sum(nb for _, nb in u) for u in adapters]  # each layer's adapter gradients
    dd = replace(d, wbytes=ad.ab)  # the adapters' optimizer states: their dtype
    states: dict = {}

    def unit_bytes(unit) -> int:
        return sum(_shard(nb // 2, num_gpus) * 2 * num_gpus for _, nb in unit)

    for k in range(steps):
        col = _Collectives(s, num_gpus)

        def gather(unit, forward: bool, col: _Collectives = col) -> list[int]:
            return col.gather(unit_bytes(unit), [nb for _, nb in unit], forward)

        p_emb = gather(emb_unit, True)
        emb = s.a(n * h * c)
        s.f(*p_emb)
        if k == 0:  # the forward thread's cuBLAS workspace, at the first matmul
            s.a(CUBLAS_WORKSPACE_BYTES)
        x = emb
        saved, inputs, p_layers = [], [], []
        for li in range(d.layers):
            p_layers.append(gather(layer_units[li], True))
            out, sv = _layer_fwd(s, d, ad, x, save=not d.checkpointing,
                                 free_input=not d.checkpointing and x != emb)
            if reshard_after_forward:
                s.f(*p_layers[li])
            saved.append(sv)
            inputs.append(x)
            x = out
        p_tail = gather(tail_unit, True)
        yf, nf = _norm_fwd(s, d, True)
        s.f(x)
        logits, l32, lsm = _loss_fwd(s, n, d.vocab, c)
        s.f(l32)
        s.f(yf)
        col.release()
        s.f(logits)
        gb = _loss_bwd(s, n, d.vocab, c, lsm)
        if k == 0:  # the autograd thread's cuBLAS workspace
            s.a(CUBLAS_WORKSPACE_BYTES)
        dy = s.a(n * h * c)
        s.f(gb)
        s.f(*p_tail)
        dy = _norm_bwd(s, d, dy, nf)
        for li in reversed(range(d.layers)):
            if reshard_after_forward:
                p_layers[li] = gather(layer_units[li], False)
            sv = saved[li]
            if d.checkpointing:
                _, sv = _layer_fwd(s, d, ad, inputs[li], save=True, stop_early=True)
            dy = _layer_bwd(s, d, ad, dy, sv)
            if d.checkpointing and li > 0:  # the checkpoint frame's input
                s.f(inputs[li])
            s.f(*p_layers[li])
            if grad_bytes[li]:  # a layer without adapted Linears has no gradients to reduce
                col.reduce(grad_bytes[li])
        col.release()
        s.f(dy, emb)
        col.end_backward()
        _optimizer(s, dd, trainable, {}, states, first=(k == 0))
        col.zero_grad()
    return s.req


def simulate_adapter_fsdp(spec, opts, num_gpus: int, steps: int = 2, reshard_after_forward: bool = True) -> FsdpSim:
    """Run :func:`adapter_fsdp_step_sequence` through the multi-stream caching-allocator model; peaks after the
    build, like ``ftcalc profile``."""
    peak_reserved, peak_allocated, by_stream = simulate_peaks(
        adapter_fsdp_step_sequence(spec, opts, num_gpus, steps, reshard_after_forward))
    return FsdpSim(peak_allocated, peak_reserved, by_stream)
