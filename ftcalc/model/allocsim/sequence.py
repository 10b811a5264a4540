"""The tensor allocation / free sequence of full fine-tuning steps, generated from the model config.

A mechanism model of what ``ftcalc.train.recipe.train_step`` asks of the CUDA caching allocator (transformers
Llama-style decoder, bf16 autocast, the model's own causal-LM loss with fp32 logits, HF per-layer
non-reentrant gradient checkpointing when on, ``torch.optim`` optimizers, ``zero_grad(set_to_none=True)``),
to be fed to :mod:`ftcalc.model.allocsim.allocator`. The order and sizes were read off recorded device traces
(``data/traces``, fit-side runs t-c004, t-a014, t-d006, t-a012; see docs/notes/allocator.md):

- build: the weights in module order (embedding, per layer q k v o gate up down + norms, final norm,
  lm_head when untied); with tied embeddings a V x h lm_head copy allocated and freed at the end (its
  segment stays cached).
- forward, per decoder layer (N = batch*seq tokens): RMSNorm (fp32 upcast saved, fp32 square/product
  transients, bf16 normalized saved, output saved as the projections' input); q/k/v projections; rotary
  (q*cos, cat(-x2, x1), *sin, add: 4 transients, the rotated q/k saved, q/k freed); SDPA (output and
  fp32 logsumexp saved); o_proj; residual add (the attention residual lives until the MLP residual
  add); RMSNorm; gate, silu, up, product (all saved); down; residual add.
- loss: bf16 logits (N x V), fp32 upcast, fp32 log-softmax (saved), the fp32 upcast freed, the bf16
  logits dropped before backward; backward: two fp32 N x V gradients, the bf16 logits gradient, the
  lm_head weight gradient.
- backward, per layer in reverse (bf16-true: autograd node by node, :func:`_decoder_layer_bwd`, read off
  t-qwen3, t-tied3, t-c004, t-d006): each Linear's weight and input gradient (plus a bias ``sum_to``),
  elementwise backward transients, the RMSNorm backward's fp32 chain, the flash-attention backward
  workspace, gradient sums in place where autograd can reuse the first gradient (the residual adds), saved
  tensors freed as their node finishes (with checkpointing at the end of ``apply``). With checkpointing the
  layer's forward runs without saving (each tensor dies when Python drops it) and is recomputed before
  the layer's backward (up to the last saved tensor).
- bf16-mixed (fp32 weights and residual stream under bf16 autocast, read off t-a015,
  :func:`_mixed_forward_backward`): each Linear casts its weight (kept in autocast's cache until autocast
  exits after the loss) and its fp32 input (a new bf16 copy per Linear); the rotary products are fp32;
  backward adds a ``ToCopyBackward`` per cast (fp32 input gradient, fp32 weight gradient), a bf16 copy of
  the fp32 residual gradient at each residual add, and accumulates the norms' input gradients into one fp32
  residual gradient. The coarser :func:`_layer_fwd` / :func:`_layer_bwd` mixed structure (not read off a
  trace) is kept for ``alloc_sequence_fsdp``.
- two 32 MiB cuBLAS workspaces (forward and autograd thread) and the embedding backward's fp32
  partial-segment buffer.
- optimizer: AdamW states (exp_avg, exp_avg_sq, param dtype) allocated lazily at the first step, in
  parameter order; foreach AdamW allocates one temporary per parameter (``_foreach_sqrt`` of exp_avg_sq)
  and frees them in reverse; fused AdamW none; bitsandbytes 8-bit states (uint8, paged ones outside the
  caching allocator); Adafactor fp32 per-parameter transients; SGD nothing.
- zero_grad(set_to_none=True): every gradient freed, in parameter order.

Tensors of the small pool (<= 1 MiB) are included only where they matter little; the small pool's
reservation (a few MiB) is not modelled. Entry points: :func:`step_sequence` (the requests) and
:func:`simulate_training` (peaks and gap).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from ftcalc.model.allocsim.allocator import simulate_peaks

__all__ = ["Dims", "dims_for", "step_sequence", "simulate_training", "TrainingSim"]


@dataclass(frozen=True)
class Dims:
    """The sizes the sequence depends on."""

    n: int  # tokens per micro-batch (batch * seq)
    b: int
    t: int
    h: int
    inter: int
    heads: int
    kv_dim: int
    q_dim: int
    vocab: int
    layers: int
    tied: bool
    qkv_bias: bool
    wbytes: int  # weight / gradient / optimizer-state bytes per element
    abytes: int  # residual-stream bytes per element (bf16-true: 2; bf16-mixed: 4)
    mixed: bool  # autocast casts fp32 weights to bf16 copies
    checkpointing: bool
    optimizer: str
    norms_per_layer: int


def dims_for(spec, opts) -> Dims:
    """:class:`Dims` of a catalog model spec and training options."""
    a = spec.arch
    hd = a.head_dim or a.hidden_size // a.num_heads
    w = 2 if opts.precision == "bf16-true" else 4
    return Dims(n=opts.batch_size * opts.seq_len, b=opts.batch_size, t=opts.seq_len, h=a.hidden_size,
                inter=a.intermediate_size, heads=a.num_heads, kv_dim=a.num_kv_heads * hd, q_dim=a.num_heads * hd,
                vocab=a.vocab_size, layers=a.num_layers, tied=a.tie_word_embeddings, qkv_bias=a.qkv_bias,
                wbytes=w, abytes=w, mixed=opts.precision != "bf16-true",
                checkpointing=bool(opts.checkpointing), optimizer=opts.optimizer,
                norms_per_layer=a.norms_per_layer)


class _Seq:
    """Builds the request list: ``a(nbytes) -> id`` and ``f(id)``."""

    def __init__(self) -> None:
        self.req: list[tuple[str, int, int]] = []
        self._ids = itertools.count()

    def a(self, nbytes: int) -> int:
        i = next(self._ids)
        self.req.append(("alloc", i, int(nbytes)))
        return i

    def f(self, *ids: int | None) -> None:
        for i in ids:
            if i is not None:
                self.req.append(("free", i, 0))


def _params(d: Dims) -> list[tuple[str, int]]:
    """(name, numel) of every parameter in module order."""
    ps = [("embed", d.vocab * d.h)]
    for li in range(d.layers):
        ps += [(f"{li}.q", d.q_dim * d.h), (f"{li}.k", d.kv_dim * d.h), (f"{li}.v", d.kv_dim * d.h)]
        if d.qkv_bias:
            ps += [(f"{li}.qb", d.q_dim), (f"{li}.kb", d.kv_dim), (f"{li}.vb", d.kv_dim)]
        ps += [(f"{li}.o", d.h * d.q_dim), (f"{li}.gate", d.inter * d.h), (f"{li}.up", d.inter * d.h),
               (f"{li}.down", d.h * d.inter)]
        ps += [(f"{li}.norm{j}", d.h) for j in range(d.norms_per_layer)]
    ps.append(("norm", d.h))
    if not d.tied:
        ps.append(("lm_head", d.vocab * d.h))
    return ps


def _norm_fwd(s: _Seq, d: Dims, keep: bool) -> tuple[int, list[int]]:
    """RMSNorm forward; returns (output, saved tensors). ``keep``: saved tensors stay allocated."""
    n, h = d.n, d.h
    x32 = s.a(n * h * 4) if not d.mixed else None  # hidden.to(float32) (no-op on an fp32 stream)
    p = s.a(n * h * 4)
    var = s.a(n * 4)
    s.f(p)
    e = s.a(n * 4)
    r = s.a(n * 4)
    s.f(e)
    m = s.a(n * h * 4)
    if not keep and not d.mixed:  # nothing saved (checkpointed forward): Python drops each tensor at once
        s.f(x32)
        xb = s.a(n * h * 2)
        y = s.a(n * h * 2)
        s.f(xb, m, var, r)
        return y, []
    xb = s.a(n * h * 2) if not d.mixed else None  # .to(input dtype)
    y = s.a(n * h * d.abytes)  # weight * normalized
    saved = [x for x in (x32, r, xb) if x is not None]
    if d.mixed:
        saved.append(m)
    else:
        s.f(m)
    s.f(var)
    if not keep:
        s.f(*saved)
        saved = []
    return y, saved


def _rotary_fwd(s: _Seq, d: Dims) -> list[int]:
    """Rotary embedding of q then k (bf16): ``x * cos``, ``rotate_half`` (a negated half and a cat), ``* sin``,
    the sum; returns the two rotated tensors."""
    n, c = d.n, 2
    rot = []
    for dim in (d.q_dim, d.kv_dim):
        t1 = s.a(n * dim * c)
        ng = s.a(n * dim * c // 2)
        cat = s.a(n * dim * c)
        s.f(ng)
        t2 = s.a(n * dim * c)
        s.f(cat)
        out = s.a(n * dim * c)
        s.f(t1, t2)
        rot.append(out)
    return rot


def _layer_fwd(s: _Seq, d: Dims, x: int, keep: bool, stop_early: bool = False,
               free_input: bool = False) -> tuple[int | None, dict]:
    """One decoder layer forward from input ``x``; returns (output, saved dict). ``free_input``: the
    input dies after the attention residual add (it is not saved by any node). bf16-mixed: the coarser
    structure (not read off a trace), kept for ``alloc_sequence_fsdp`` (one-GPU sequences use
    :func:`_mixed_layer_fwd`)."""
    n, h, c = d.n, d.h, 2
    sv: dict = {}
    y, sv["n1"] = _norm_fwd(s, d, keep)
    wc = {}
    if d.mixed:  # autocast bf16 copies of the fp32 weights, saved by the matmuls
        for k, sz in (("q", d.q_dim * h), ("k", d.kv_dim * h), ("v", d.kv_dim * h)):
            wc[k] = s.a(sz * 2)
    q = s.a(n * d.q_dim * c)
    k = s.a(n * d.kv_dim * c)
    v = s.a(n * d.kv_dim * c)
    rot = _rotary_fwd(s, d)
    s.f(q, k)
    o = s.a(n * d.q_dim * c)
    lse = s.a(d.b * d.heads * d.t * 4)
    if d.mixed:
        wc["o"] = s.a(h * d.q_dim * 2)
    po = s.a(n * h * c)
    if not keep and not d.mixed:  # nothing saved: the attention's locals die before the residual add
        s.f(o, lse, *rot, v, y)
    h1 = s.a(n * h * d.abytes)
    s.f(po)
    if free_input and d.mixed:
        s.f(x)
    if not keep and not d.mixed:
        pass
    elif not keep:
        s.f(y, v, *rot, o, lse, *wc.values())
        wc = {}
    else:
        sv.update(y1=y, v=v, rot=rot, o=o, lse=lse)
    y2, sv["n2"] = _norm_fwd(s, d, keep)
    if d.mixed:
        for kk, sz in (("gate", d.inter * h), ("up", d.inter * h), ("down", d.inter * h)):
            wc[kk] = s.a(sz * 2)
    if not keep and not d.mixed:  # nothing saved: each MLP temporary dies as soon as it is consumed
        g = s.a(n * d.inter * c)
        act = s.a(n * d.inter * c)
        s.f(g)
        up = s.a(n * d.inter * c)
        mul = s.a(n * d.inter * c)
        s.f(act, up)
        dn = s.a(n * h * c)
        s.f(mul, y2)
        out = s.a(n * h * c)
        s.f(dn, h1)
        return out, {}
    g = s.a(n * d.inter * c)
    act = s.a(n * d.inter * c)
    up = s.a(n * d.inter * c)
    mul = s.a(n * d.inter * c)
    sv["wc"] = wc
    if stop_early:  # checkpoint recompute stops at the last saved tensor
        sv.update(h1=h1, y2=y2, g=g, act=act, up=up, mul=mul)
        return None, sv
    dn = s.a(n * h * c)
    out = s.a(n * h * d.abytes)
    s.f(dn)
    s.f(h1)
    if free_input and not d.mixed:  # the caller's reference to the layer input goes at the layer's return
        s.f(x)
    if not keep:
        s.f(y2, g, act, up, mul, *wc.values())
        sv = {}
    else:
        sv.update(y2=y2, g=g, act=act, up=up, mul=mul)
    return out, sv


def _node_end(s: _Seq, ckpt: bool, saved: tuple = (), grads_in: tuple = (), reduce_bytes: int = 0) -> None:
    """The frees at the end of one autograd node's backward (``engine.cpp``: ``call_function`` runs the node's
    ``apply`` then ``validate_outputs``, whose ``sum_to`` reduces a broadcast gradient (a bias or norm
    weight: a workspace of ``reduce_bytes`` while reducing); ``evaluate_function`` then calls
    ``release_variables``). ``saved``: the node's saved tensors that die with it (in the order
    ``release_variables`` drops them); ``grads_in``: its incoming gradient and the unreduced temporaries.
    Without checkpointing the saved tensors die at ``release_variables``, after the incoming gradient. With
    non-reentrant checkpointing they are the recomputed tensors, which the checkpoint's unpack hook hands over
    (dropping its own reference), so they die with ``apply``'s locals (in reverse order), before the
    reduction and the incoming gradient (order read off t-qwen3 / t-tied3 vs t-c004 / t-d006)."""
    if ckpt:
        s.f(*reversed(saved))
    if reduce_bytes:
        s.f(s.a(reduce_bytes))
    s.f(*grads_in)
    if not ckpt:
        s.f(*saved)


def _rmsnorm_bwd(s: _Seq, d: Dims, dy: int, saved: list[int], frame: int | None = None,
                 ckpt: bool = True) -> int:
    """RMSNorm backward (bf16 residual stream) from ``dy``, node by node in reverse of the forward
    ``x32 = x.float(); var = x32.pow(2).mean(-1); m = x32 * rsqrt(var + eps); y = w * m.to(bf16)``; frees
    ``dy`` and the saved tensors and returns the bf16 input gradient (which the caller accumulates in place
    into the residual gradient). ``frame``: a tensor that dies when the last saved tensor of a checkpointed
    layer is released (the layer input, held by the checkpoint frame)."""
    n, h = d.n, d.h
    x32, r, xb = saved
    dxb = s.a(n * h * 2)  # MulBackward(w * xb): dy * w
    prod = s.a(n * h * 2)  # dy * xb, summed over tokens into the weight gradient
    _node_end(s, ckpt and d.checkpointing, saved=(xb,), grads_in=(prod, dy), reduce_bytes=n * h * 8)
    dm = s.a(n * h * 4)  # ToCopyBackward: bf16 -> fp32
    s.f(dxb)
    pr = s.a(n * h * 4)  # MulBackward(x32 * r): dm * x32 (other's gradient first), summed to N x 1
    dx = s.a(n * h * 4)  # dm * r: the first gradient of x32, the pow path is added to it in place
    s.f(pr, dm)
    dmean = s.a(n * h * 4)  # rsqrt / add / mean backward: the N x 1 gradient expanded / h
    p1 = s.a(n * h * 4)  # PowBackward: grad * (2 * x32.pow(1))
    p2 = s.a(n * h * 4)
    dpow = s.a(n * h * 4)
    s.f(p2, p1)
    _node_end(s, ckpt and d.checkpointing, saved=(x32,), grads_in=(dmean,))
    s.f(frame, dpow, r)  # dpow: accumulated in place into dx (InputBuffer::accumulate)
    db = s.a(n * h * 2)  # ToCopyBackward: fp32 -> bf16
    s.f(dx)
    return db


def _linear_node_bwd(s: _Seq, d: Dims, grads: dict, name: str, wnumel: int, din: int, g: int,
                saved: tuple = (), bias_out: int = 0) -> int:
    """One ``nn.Linear`` backward from its output gradient ``g`` (freed); returns the input gradient of
    ``din`` bytes. The weight gradient is kept until zero_grad. Without bias (``MmBackward``) the weight
    gradient is allocated first; with a bias (``AddmmBackward``, ``bias_out`` output features) the input
    gradient first, and the bias gradient is a ``sum_to`` over the tokens (t-qwen3, t-d006)."""
    if bias_out:
        dx = s.a(din)
        grads[name] = s.a(wnumel * d.wbytes)
    else:
        grads[name] = s.a(wnumel * d.wbytes)
        dx = s.a(din)
    _node_end(s, d.checkpointing, saved=saved, grads_in=(g,) if g is not None else (),
              reduce_bytes=d.n * bias_out * 8 if bias_out else 0)
    return dx


def _decoder_layer_bwd(s: _Seq, d: Dims, li: int, dy: int, sv: dict, grads: dict,
                       frame: int | None = None) -> int:
    """One decoder layer's backward (bf16 residual stream) from the output gradient ``dy``; returns the input
    gradient. Autograd node by node in the engine's order (latest-created node first: down, the
    ``act * up`` product, up, silu, gate, post-attention norm, o, SDPA, the rotary of k then of q, v, k, q,
    input norm). Gradient accumulation (``InputBuffer::accumulate``): the first gradient to arrive is
    reused in place when it is a plain tensor held once (the residual gradient, the sum of k and v, the
    rotary's slice gradient); a linear's input gradient is a view of its 2-D matmul output (the view keeps
    its base), so a sum that starts with one is a new tensor (``dx_up + dx_gate``, ``dx_v + dx_k``)."""
    n, h, c, inter = d.n, d.h, 2, d.inter
    ni = n * inter * c
    bias = d.qkv_bias
    da = _linear_node_bwd(s, d, grads, f"{li}.down", h * inter, ni, None, saved=(sv["mul"],))
    dup = s.a(ni)  # MulBackward(act * up): the second operand's gradient first
    dact = s.a(ni)
    _node_end(s, d.checkpointing, saved=(sv["up"], sv["act"]), grads_in=(da,))
    dx_up = _linear_node_bwd(s, d, grads, f"{li}.up", h * inter, n * h * c, dup)
    dg = s.a(ni)  # SiluBackward
    _node_end(s, d.checkpointing, saved=(sv["g"],), grads_in=(dact,))
    dx_g = _linear_node_bwd(s, d, grads, f"{li}.gate", h * inter, n * h * c, dg, saved=(sv["y2"],))
    dsum = s.a(n * h * c)  # dx_up + dx_gate (out of place: dx_up is a view)
    s.f(dx_up, dx_g)
    s.f(_rmsnorm_bwd(s, d, dsum, sv["n2"]))  # accumulated in place into dy
    do = _linear_node_bwd(s, d, grads, f"{li}.o", h * d.q_dim, n * d.q_dim * c, None)
    dq = s.a(n * d.q_dim * c)
    dk = s.a(n * d.kv_dim * c)
    dv = s.a(n * d.kv_dim * c)
    s.f(s.a(n * d.q_dim * 8 + d.b * d.heads * d.t * 4 + 256))  # flash-attention backward workspace
    qr, kr = sv["rot"]
    _node_end(s, d.checkpointing, saved=(kr, qr, sv["v"], sv["lse"], sv["o"]), grads_in=(do,))
    rot = {}
    for name, src, dim in (("k", dk, d.kv_dim), ("q", dq, d.q_dim)):  # rotary: x*cos + rotate_half(x)*sin
        t1 = s.a(n * dim * c)  # grad * sin
        ng = s.a(n * dim * c // 2)  # NegBackward of one half
        x = s.a(n * dim * c)  # SliceBackward (zeros + copy): the first gradient of x
        s.f(ng)
        y = s.a(n * dim * c)  # SliceBackward of the other half, added in place into x
        s.f(t1, y)
        z = s.a(n * dim * c)  # grad * cos, added in place into x
        s.f(src, z)
        rot[name] = x
    kv_bias = d.kv_dim if bias else 0
    dx_v = _linear_node_bwd(s, d, grads, f"{li}.v", h * d.kv_dim, n * h * c, dv, bias_out=kv_bias)
    kc = s.a(n * d.kv_dim * c)  # transpose(1, 2).reshape: a contiguous copy
    s.f(rot["k"])
    dx_k = _linear_node_bwd(s, d, grads, f"{li}.k", h * d.kv_dim, n * h * c, kc, bias_out=kv_bias)
    acc = s.a(n * h * c)  # dx_v + dx_k (out of place: dx_v is a view)
    s.f(dx_v, dx_k)
    qc = s.a(n * d.q_dim * c)
    s.f(rot["q"])
    dx_q = _linear_node_bwd(s, d, grads, f"{li}.q", h * d.q_dim, n * h * c, qc, saved=(sv["y1"],),
                       bias_out=d.q_dim if bias else 0)
    s.f(dx_q)  # accumulated in place into acc
    s.f(_rmsnorm_bwd(s, d, acc, sv["n1"], frame))  # accumulated in place into dy
    return dy


def _loss_fwd(s: _Seq, n: int, vocab: int, c: int) -> tuple[int, int, int]:
    """The LM head's logits (compute dtype), their fp32 upcast and its log-softmax: (logits, upcast, log-softmax)
    ids; the caller frees the first two when the trace does."""
    return s.a(n * vocab * c), s.a(n * vocab * 4), s.a(n * vocab * 4)


def _loss_bwd(s: _Seq, n: int, vocab: int, c: int, lsm: int) -> int:
    """Cross-entropy backward: two fp32 N x V gradients (the log-softmax's saved output freed between them),
    then the logits' gradient in compute dtype, returned."""
    g1 = s.a(n * vocab * 4)
    g2 = s.a(n * vocab * 4)
    s.f(g1, lsm)
    gb = s.a(n * vocab * c)
    s.f(g2)
    return gb


def _cast(s: _Seq, cache: dict, name: str, nbytes: int) -> int:
    """autocast's bf16 copy of a parameter (``cached_cast`` in ``autocast_mode.h``: a leaf that requires grad
    is cast once per autocast region and the copy kept in the region's cache until autocast exits)."""
    if name not in cache:
        cache[name] = s.a(nbytes)
    return cache[name]


def _autocast_linear_fwd(s: _Seq, d: Dims, cache: dict, name: str, wnumel: int, in_features: int,
                         out_features: int, save: bool, fp32_input: bool = True) -> tuple[int, int | None, int]:
    """An ``nn.Linear`` under bf16 autocast: the weight's cached cast, the input's own cast (an fp32
    activation is not a leaf: cast anew for every Linear that reads it, saved by the matmul), the bf16 output.
    ``save``: the input cast is kept (saved); otherwise it dies once the matmul has run. Returns (weight cast,
    input cast or None, output)."""
    w = _cast(s, cache, name, wnumel * 2)
    xc = s.a(d.n * in_features * 2) if fp32_input else None
    out = s.a(d.n * out_features * 2)
    if not save:
        s.f(xc)
        xc = None
    return w, xc, out


def _mixed_layer_fwd(s: _Seq, d: Dims, li: int, cache: dict, save: bool,
                     stop_early: bool = False) -> tuple[int | None, dict]:
    """One decoder layer forward with fp32 weights and residual stream under bf16 autocast (bf16-mixed), read
    off t-a015 (events 10273-10458: the checkpointed first forward; 12893-12986: a recompute). ``save``:
    autograd keeps the saved tensors (recompute, or no checkpointing); otherwise each tensor dies when
    Python drops it. ``cache``: the autocast region's weight casts (the forward's lives until autocast exits
    after the loss). ``stop_early``: a checkpoint recompute, which stops at the last saved tensor (down's
    weight cast). The layer input is never freed here: it is saved by the input norm (the fp32 upcast is a
    no-op) and held by the checkpoint frame. Returns (output, saved dict)."""
    n, h, c, inter, qd, kvd = d.n, d.h, 2, d.inter, d.q_dim, d.kv_dim
    sv: dict = {}
    y1, sv["n1"] = _norm_fwd(s, d, keep=save)  # fp32: pow, x * rsqrt (saved), w * m
    for k, out in (("q", qd), ("k", kvd), ("v", kvd)):
        sv["w" + k], sv["x" + k], sv[k] = _autocast_linear_fwd(s, d, cache, f"{li}.{k}", out * h, h, out, save)
    rot = []
    for dim in (qd, kvd):  # rotary with fp32 cos / sin (they follow the fp32 hidden states): fp32 products
        t1 = s.a(n * dim * 4)  # x * cos
        ng = s.a(n * dim * c // 2)  # -x2
        cat = s.a(n * dim * c)  # cat(-x2, x1)
        s.f(ng)
        t2 = s.a(n * dim * 4)  # rotate_half(x) * sin
        s.f(cat)
        rot.append(s.a(n * dim * 4))  # the sum
        s.f(t1, t2)
    s.f(sv.pop("q"), sv.pop("k"))  # the products save cos / sin, not the projections
    sv["kc"] = s.a(n * kvd * c)  # SDPA's autocast casts of k and q (saved), in t-a015's order
    sv["qc"] = s.a(n * qd * c)
    sv["o"] = s.a(n * qd * c)
    sv["lse"] = s.a(d.b * d.heads * d.t * 4)
    if not save:
        s.f(sv.pop("qc"), sv.pop("kc"))
    sv["wo"], _, po = _autocast_linear_fwd(s, d, cache, f"{li}.o", h * qd, qd, h, save, fp32_input=False)
    if not save:
        s.f(sv.pop("o"), sv.pop("lse"))
    s.f(*rot)  # the attention's locals at its return (q / k are saved as their casts)
    if not save:
        s.f(sv.pop("v"))
    s.f(y1)
    sv["h1"] = s.a(n * h * 4)  # residual add: fp32 + bf16 -> fp32
    s.f(po)
    y2, sv["n2"] = _norm_fwd(s, d, keep=save)
    sv["wg"], sv["xg"], sv["g"] = _autocast_linear_fwd(s, d, cache, f"{li}.gate", inter * h, h, inter, save)
    sv["act"] = s.a(n * inter * c)
    if not save:
        s.f(sv.pop("g"))
    sv["wu"], sv["xu"], sv["up"] = _autocast_linear_fwd(s, d, cache, f"{li}.up", inter * h, h, inter, save)
    sv["mul"] = s.a(n * inter * c)
    if not save:
        s.f(sv.pop("act"), sv.pop("up"))
    sv["wd"] = _cast(s, cache, f"{li}.down", h * inter * 2)  # the product is bf16 already: no input cast
    if stop_early:
        s.f(y2)
        return None, sv
    dn = s.a(n * h * c)
    if not save:
        s.f(sv.pop("mul"))
    s.f(y2)
    out = s.a(n * h * 4)
    s.f(dn)
    if not save:
        s.f(sv.pop("h1"))
        sv = {}
    return out, sv


def _mixed_rmsnorm_bwd(s: _Seq, d: Dims, dy: int, saved: list[int], x: int, resid: int | None,
                       ckpt: bool, x_in_frame: bool = False) -> int:
    """RMSNorm backward on the fp32 residual stream (bf16-mixed) from the fp32 ``dy`` (freed): ``x.float()``
    is a no-op there, so the input gradients of ``x * rsqrt`` and of ``pow`` go straight into the residual
    gradient ``resid`` (accumulated in place; the first one becomes it when ``resid`` is None) and the saved
    ``x`` is the residual-stream tensor itself, freed by the pow node (``x_in_frame``: a checkpointed layer's
    input, which dies with the frame after the incoming gradient). Returns the residual gradient (t-a015
    events 12843-12891, 13041-13091, 13224-13274)."""
    n, h = d.n, d.h
    r, m = saved if saved else (None, None)
    dm = s.a(n * h * 4)  # MulBackward(w * m): dy * w
    prod = s.a(n * h * 4)  # dy * m, summed over tokens into the weight gradient
    _node_end(s, ckpt, saved=(m,), grads_in=(prod, dy), reduce_bytes=n * h * 8)
    pr = s.a(n * h * 4)  # MulBackward(x * r): dm * x (other's gradient first), summed to N x 1
    dx = s.a(n * h * 4)  # dm * r
    s.f(pr, dm)
    if resid is None:
        resid = dx
    else:
        s.f(dx)  # accumulated in place into the residual gradient
    dmean = s.a(n * h * 4)  # rsqrt / add / mean backward: the N x 1 gradient expanded / h
    p1 = s.a(n * h * 4)  # PowBackward: grad * (2 * x.pow(1))
    p2 = s.a(n * h * 4)
    dpow = s.a(n * h * 4)
    s.f(p2, p1)
    _node_end(s, ckpt and not x_in_frame, saved=(x,), grads_in=(dmean,))
    s.f(dpow, r)  # dpow: accumulated in place into the residual gradient
    return resid


def _autocast_linear_bwd(s: _Seq, d: Dims, grads: dict, name: str, wnumel: int, din: int, g: int,
                         saved: tuple, cast_input: bool = True, bias_out: int = 0,
                         accumulate: bool = False) -> int | None:
    """The backward of an autocast ``nn.Linear`` from its bf16 output gradient ``g`` (freed): the matmul node on
    the bf16 casts (bf16 weight gradient and input gradient of ``din`` bytes, see :func:`_linear_node_bwd`),
    then the ``ToCopyBackward`` of each cast (the input's first: it was created after the weight's): the
    input gradient back to fp32 (when the input was cast) and the fp32 weight gradient, which
    ``AccumulateGrad`` keeps as ``.grad``. ``accumulate``: the fp32 input gradient is added in place into a
    gradient already waiting in the next node's input buffer as soon as its ``ToCopyBackward`` has run (before
    the weight's), and freed. Returns the input gradient (fp32 when cast, else the bf16 one; None when
    accumulated)."""
    if bias_out:
        dx = s.a(din)
        gw = s.a(wnumel * 2)
    else:
        gw = s.a(wnumel * 2)
        dx = s.a(din)
    _node_end(s, d.checkpointing, saved=saved, grads_in=(g,), reduce_bytes=d.n * bias_out * 8)
    if cast_input:
        dxf = s.a(din * 2)
        s.f(dx)
        dx = dxf
        if accumulate:
            s.f(dx)
            dx = None
    grads[name] = s.a(wnumel * 4)
    s.f(gw)
    return dx


def _mixed_layer_bwd(s: _Seq, d: Dims, li: int, resid: int, g_mlp: int, sv: dict, grads: dict, x: int) -> int:
    """One decoder layer's backward under bf16 autocast with fp32 weights (bf16-mixed), node by node as in
    t-a015 (events 12892-13274). ``resid``: the fp32 residual gradient, one tensor through all layers (both
    residual adds pass it on unchanged and each norm's input gradients are added into it in place);
    ``g_mlp``: its bf16 copy for the MLP output, made by the output ``AddBackward`` before the caller's
    recompute (``validate_outputs`` casts a gradient to its input's dtype). Each autocast Linear adds a
    ``ToCopyBackward`` per cast; the rotary's fp32 products return their bf16 operands' gradients through a
    cast. ``x``: the layer input, freed by the input norm. Returns the residual gradient."""
    n, h, c, inter, qd, kvd = d.n, d.h, 2, d.inter, d.q_dim, d.kv_dim
    ni = n * inter * c
    ckpt = d.checkpointing
    kv_bias = kvd if d.qkv_bias else 0
    dmul = _autocast_linear_bwd(s, d, grads, f"{li}.down", h * inter, ni, g_mlp, (sv["wd"], sv["mul"]),
                                cast_input=False)
    dup = s.a(ni)  # MulBackward(act * up): the second operand's gradient first
    dact = s.a(ni)
    _node_end(s, ckpt, saved=(sv["up"], sv["act"]), grads_in=(dmul,))
    dy2 = _autocast_linear_bwd(s, d, grads, f"{li}.up", h * inter, n * h * c, dup, (sv["wu"], sv["xu"]))
    dg = s.a(ni)  # SiluBackward
    _node_end(s, ckpt, saved=(sv["g"],), grads_in=(dact,))
    _autocast_linear_bwd(s, d, grads, f"{li}.gate", h * inter, n * h * c, dg, (sv["wg"], sv["xg"]),
                         accumulate=True)  # added in place into dy2 (a plain fp32 tensor)
    resid = _mixed_rmsnorm_bwd(s, d, dy2, sv["n2"], sv["h1"], resid, ckpt)
    g_attn = s.a(n * h * c)  # AddBackward(x + attention output): the bf16 copy
    do = _autocast_linear_bwd(s, d, grads, f"{li}.o", h * qd, n * qd * c, g_attn, (sv["wo"],), cast_input=False)
    dq, dk, dv = s.a(n * qd * c), s.a(n * kvd * c), s.a(n * kvd * c)
    s.f(s.a(n * qd * 8 + d.b * d.heads * d.t * 4 + 256))  # flash-attention backward workspace
    _node_end(s, ckpt, saved=(sv["kc"], sv["qc"], sv["v"], sv["lse"], sv["o"]), grads_in=(do,))
    dqf = s.a(n * qd * 4)  # ToCopyBackward of SDPA's q cast, then k's
    s.f(dq)
    dkf = s.a(n * kvd * 4)
    s.f(dk)
    rot = {}
    for name, src, dim in (("k", dkf, kvd), ("q", dqf, qd)):  # rotary: x*cos + rotate_half(x)*sin, fp32
        t = s.a(n * dim * 4)  # grad * sin
        tb = s.a(n * dim * c)  # cast to rotate_half's bf16 dtype
        s.f(t)
        ng = s.a(n * dim * c // 2)  # NegBackward of one half
        xg = s.a(n * dim * c)  # SliceBackward (zeros + copy): the first gradient of x
        s.f(ng)
        yg = s.a(n * dim * c)  # SliceBackward of the other half, added in place into xg
        s.f(tb, yg)
        t = s.a(n * dim * 4)  # grad * cos
        zb = s.a(n * dim * c)  # cast to bf16, added in place into xg
        s.f(t, src, zb)
        rot[name] = xg
    dy1 = _autocast_linear_bwd(s, d, grads, f"{li}.v", h * kvd, n * h * c, dv, (sv["wv"], sv["xv"]),
                               bias_out=kv_bias)
    kc = s.a(n * kvd * c)  # transpose(1, 2).reshape: a contiguous copy
    s.f(rot["k"])
    _autocast_linear_bwd(s, d, grads, f"{li}.k", h * kvd, n * h * c, kc, (sv["wk"], sv["xk"]),
                         bias_out=kv_bias, accumulate=True)  # added in place into dy1
    qc = s.a(n * qd * c)
    s.f(rot["q"])
    _autocast_linear_bwd(s, d, grads, f"{li}.q", h * qd, n * h * c, qc, (sv["wq"], sv["xq"]),
                         bias_out=qd if d.qkv_bias else 0, accumulate=True)
    return _mixed_rmsnorm_bwd(s, d, dy1, sv["n1"], x, resid, ckpt, x_in_frame=ckpt)


def _norm_bwd(s: _Seq, d: Dims, dy: int, saved: list[int]) -> int:
    """RMSNorm backward from ``dy``; frees its saved tensors and returns the input gradient (the caller
    frees ``dy``). Coarse approximation (not read off a trace), kept for ``alloc_sequence_fsdp``; one-GPU sequences use
    :func:`_rmsnorm_bwd` (bf16-true) and :func:`_mixed_rmsnorm_bwd` (bf16-mixed)."""
    n, h = d.n, d.h
    dxb = s.a(n * h * 2)
    prod = s.a(n * h * 2)
    red = s.a(n * h * 8)
    s.f(red, prod)
    dm = s.a(n * h * 4)
    s.f(dxb)
    t1 = s.a(n * h * 4)
    t2 = s.a(n * h * 4)
    s.f(t1)
    t3 = s.a(n * h * 4)
    s.f(t2)
    dx = s.a(n * h * 4)
    s.f(t3, dm, *saved)
    if not d.mixed:
        db = s.a(n * h * 2)
        s.f(dx)
        dx = db
    return dx


def _linear_bwd(s: _Seq, d: Dims, grads: dict, name: str, wnumel: int, din: int) -> int:
    """Weight gradient (kept, re-allocated each step) then input gradient of ``din`` bytes."""
    grads[name] = s.a(wnumel * d.wbytes)
    return s.a(din)


def _layer_bwd(s: _Seq, d: Dims, li: int, dy: int, sv: dict, grads: dict) -> int:
    """One decoder layer's backward, coarse approximation (a new tensor for each residual sum; the
    caller frees the layer input). Kept for ``alloc_sequence_fsdp``; one-GPU sequences use
    :func:`_decoder_layer_bwd` (bf16-true) and :func:`_mixed_layer_bwd` (bf16-mixed)."""
    n, h, c, inter = d.n, d.h, 2, d.inter
    ni = n * inter * c
    wc = sv.get("wc", {})
    da = _linear_bwd(s, d, grads, f"{li}.down", h * inter, ni)
    s.f(sv["mul"], wc.pop("down", None))
    dsil = s.a(ni)
    dup = s.a(ni)
    s.f(da, sv["act"], sv["up"])
    dx_up = _linear_bwd(s, d, grads, f"{li}.up", h * inter, n * h * c)
    s.f(dup, wc.pop("up", None))
    dg = s.a(ni)
    s.f(dsil, sv["g"])
    dx_g = _linear_bwd(s, d, grads, f"{li}.gate", h * inter, n * h * c)
    s.f(dg, wc.pop("gate", None), sv["y2"])
    dsum = s.a(n * h * c)
    s.f(dx_up, dx_g)
    dn = _norm_bwd(s, d, dsum, sv["n2"])
    s.f(dsum)
    dh = s.a(n * h * d.abytes)  # residual: dy + norm grad
    s.f(dn, dy)
    do = _linear_bwd(s, d, grads, f"{li}.o", h * d.q_dim, n * d.q_dim * c)
    s.f(wc.pop("o", None))
    dq = s.a(n * d.q_dim * c)
    dk = s.a(n * d.kv_dim * c)
    dv = s.a(n * d.kv_dim * c)
    ws = s.a(n * d.q_dim * 8 + d.b * d.heads * d.t * 4)  # flash-attention backward workspace
    s.f(ws, do, sv["o"], sv["lse"], sv["v"], *sv["rot"])
    outs = []
    for src, dim in ((dq, d.q_dim), (dk, d.kv_dim)):  # rotary backward
        t1 = s.a(n * dim * c)
        t2 = s.a(n * dim * c // 2)
        t3 = s.a(n * dim * c)
        s.f(t2)
        t4 = s.a(n * dim * c)
        s.f(t1, t3, src)
        outs.append(t4)
    dqr, dkr = outs
    dx_k = _linear_bwd(s, d, grads, f"{li}.k", h * d.kv_dim, n * h * c)
    s.f(dkr, wc.pop("k", None))
    dx_v = _linear_bwd(s, d, grads, f"{li}.v", h * d.kv_dim, n * h * c)
    s.f(dv, wc.pop("v", None))
    acc = s.a(n * h * c)
    s.f(dx_k, dx_v)
    dx_q = _linear_bwd(s, d, grads, f"{li}.q", h * d.q_dim, n * h * c)
    s.f(dqr, wc.pop("q", None), sv["y1"])
    acc2 = s.a(n * h * c)
    s.f(acc, dx_q)
    dn1 = _norm_bwd(s, d, acc2, sv["n1"])
    s.f(acc2)
    dx = s.a(n * h * d.abytes)
    s.f(dn1, dh)
    return dx


def _optimizer(s: _Seq, d: Dims, params: list[tuple[str, int]], grads: dict, states: dict, first: bool) -> None:
    """optimizer.step(): lazy states at the first step, per-optimizer temporaries."""
    opt = d.optimizer
    if opt.startswith("adamw_torch"):
        if first:
            for name, numel in params:
                states[name] = (s.a(numel * d.wbytes), s.a(numel * d.wbytes))
        if opt == "adamw_torch":  # foreach: one temporary list (sqrt(exp_avg_sq)), freed in reverse
            tmp = [s.a(numel * d.wbytes) for _, numel in params]
            s.f(*reversed(tmp))
    elif opt in ("adamw_8bit", "paged_adamw_8bit"):
        if first and opt == "adamw_8bit":
            for name, numel in params:
                per = 1 if numel >= 4096 else 4
                states[name] = (s.a(numel * per), s.a(numel * per))
    elif opt == "adafactor":
        for name, numel in params:
            if first:
                states[name] = (s.a(max(numel // 1024, 1) * 4),)
            g32 = s.a(numel * 4) if d.wbytes == 2 else None
            upd = s.a(numel * 4)
            p32 = s.a(numel * 4) if d.wbytes == 2 else None
            s.f(p32, upd, g32)
    # sgd (no momentum): in-place foreach, nothing large


# torch's cuBLAS workspace (CublasHandlePool.cpp, getChosenWorkspaceSize: 4096 * 8 KiB on sm90, the H100 /
# H200 of every measurement), one per (thread, stream) handle, taken from the caching allocator and kept:
# the forward's and the autograd engine's device thread (the two never-freed 32 MiB blocks of every trace).
CUBLAS_WORKSPACE_BYTES = 4096 * 8 * 1024
DDP_BUCKET_CAP = 25 * 2**20  # DistributedDataParallel(bucket_cap_mb=25)
DDP_FIRST_BUCKET_CAP = 2**20  # torch.distributed._DEFAULT_FIRST_BUCKET_BYTES
DDP_BROADCAST_BUFFER = 250 * 2**20  # _sync_module_states' coalesced broadcast buffer


def _grad_ready_order(d: Dims) -> list[tuple[str, int]]:
    """(name, numel) of the parameters in the order their gradients become final in backward (the order
    DDP's reducer sees them ready and rebuilds its buckets with after the first iteration): the untied
    lm_head, the final norm, per layer in reverse down, up, gate, post-attention norm, o, k, v, q,
    input norm, and the embedding last (tied: after both contributions are accumulated)."""
    order = [] if d.tied else [("lm_head", d.vocab * d.h)]
    order.append(("norm", d.h))
    for li in reversed(range(d.layers)):
        order += [(f"{li}.down", d.h * d.inter), (f"{li}.up", d.inter * d.h), (f"{li}.gate", d.inter * d.h)]
        order += [(f"{li}.norm{j}", d.h) for j in range(1, d.norms_per_layer)]
        order += [(f"{li}.o", d.h * d.q_dim), (f"{li}.k", d.kv_dim * d.h), (f"{li}.v", d.kv_dim * d.h)]
        if d.qkv_bias:
            order += [(f"{li}.kb", d.kv_dim), (f"{li}.vb", d.kv_dim), (f"{li}.qb", d.q_dim)]
        order += [(f"{li}.q", d.q_dim * d.h), (f"{li}.norm0", d.h)]
    order.append(("embed", d.vocab * d.h))
    return order


def _ddp_buckets(d: Dims, cap: int = DDP_BUCKET_CAP, first_cap: int = DDP_FIRST_BUCKET_CAP) -> list[int]:
    """Byte sizes of DDP's rebuilt gradient buckets (``compute_bucket_assignment_by_size`` over the
    gradient-ready order: a bucket closes once it holds ``>= cap`` bytes, the first one at ``first_cap``)."""
    out, cur, limit = [], 0, first_cap
    for _, numel in _grad_ready_order(d):
        cur += numel * d.wbytes
        if cur >= limit:
            out.append(cur)
            cur, limit = 0, cap
    if cur:
        out.append(cur)
    return out


def _ddp_build(s: _Seq, d: Dims, params: list[tuple[str, int]]) -> int:
    """DistributedDataParallel construction: ``_sync_module_states`` broadcasts the parameters in
    coalesced chunks (``take_tensors``: a chunk closes at ``>= 250 MiB``; a one-tensor chunk is sent in
    place, others are flattened into a new buffer, the previous buffer freed after the next one is made),
    then the reducer's initial buckets: with ``find_unused_parameters=False`` a single bucket holding every
    gradient (``bucket_size_limits=[sys.maxsize]``), alive until the buckets are rebuilt in the forward
    of the second iteration. Returns the initial bucket's id."""
    chunks, cur, cnt = [], 0, 0
    for _, numel in params:
        cur += numel * d.wbytes
        cnt += 1
        if cur >= DDP_BROADCAST_BUFFER:
            chunks.append((cur, cnt))
            cur, cnt = 0, 0
    if cur:
        chunks.append((cur, cnt))
    prev = None
    for nbytes, cnt in chunks:
        if cnt == 1:
            continue
        flat = s.a(nbytes)
        s.f(prev)
        prev = flat
    s.f(prev)
    return s.a(sum(numel for _, numel in params) * d.wbytes)


def _mixed_forward_backward(s: _Seq, d: Dims, k: int, emb: int, grads: dict) -> int:
    """Forward, loss and decoder backward of one bf16-mixed step (fp32 weights and residual stream under
    ``torch.autocast(bfloat16)``, as ``recipe.train_step``), from the fp32 embedding output ``emb``; returns
    the fp32 residual gradient reaching the embedding. The forward's weight casts stay in autocast's cache until
    autocast exits after the loss (t-a015 events 12591-12813: freed there in one burst), the LM head's cast and
    its input's cast are saved by its matmul; the loss backward ends with a ``ToCopyBackward`` per cast (the
    fp32 input gradient, the fp32 weight gradient). With checkpointing each layer is recomputed in its own
    autocast region after its output ``AddBackward`` (:func:`_mixed_layer_bwd`)."""
    n, h, c = d.n, d.h, 2
    cache: dict = {}
    saved, inputs = [], []
    x = emb
    for li in range(d.layers):
        out, sv = _mixed_layer_fwd(s, d, li, cache, save=not d.checkpointing)
        saved.append(sv)
        inputs.append(x)
        x = out
    yf, nf = _norm_fwd(s, d, keep=True)
    wlm = _cast(s, cache, "lm_head", d.vocab * h * 2)
    xlm = s.a(n * h * c)  # the final norm output's cast (saved)
    logits, l32, lsm = _loss_fwd(s, n, d.vocab, c)
    s.f(l32, yf, logits)
    if d.checkpointing:  # autocast exits: the cached casts nothing saved (checkpointed layers saved none)
        s.f(*(i for name, i in cache.items() if name != "lm_head"))
    gb = _loss_bwd(s, n, d.vocab, c, lsm)
    gw = s.a(d.vocab * h * 2)  # MmBackward of the LM head: bf16 weight gradient, then input gradient
    if k == 0:  # the autograd thread's own cuBLAS handle and workspace, at its first matmul
        s.a(CUBLAS_WORKSPACE_BYTES)
    dx = s.a(n * h * c)
    _node_end(s, False, saved=(wlm, xlm), grads_in=(gb,))
    dyf = s.a(n * h * 4)  # ToCopyBackward of the input cast
    s.f(dx)
    grads["lm_head"] = s.a(d.vocab * h * 4)  # ToCopyBackward of the weight cast: the fp32 .grad
    s.f(gw)
    resid = _mixed_rmsnorm_bwd(s, d, dyf, nf, x, None, ckpt=False)  # the final norm is outside the checkpoints
    for li in reversed(range(d.layers)):
        g_mlp = s.a(n * h * c)  # the output AddBackward's bf16 copy, before the recompute
        sv = saved[li]
        if d.checkpointing:
            _, sv = _mixed_layer_fwd(s, d, li, {}, save=True, stop_early=True)
        resid = _mixed_layer_bwd(s, d, li, resid, g_mlp, sv, grads, inputs[li])
    return resid


def step_sequence(spec, opts, steps: int = 3, include_build: bool = True,
                  ddp: bool = False) -> list[tuple[str, int, int]]:
    """The request sequence (``("alloc", id, nbytes)`` / ``("free", id, 0)`` / ``("reset", 0, 0)``) of
    building the model and running ``steps`` training steps; "reset" marks where the peaks are reset
    (after the build, as the profiler does). ``ddp``: one rank of torch DistributedDataParallel
    (``find_unused_parameters=False``, ``bucket_cap_mb=25``, ``gradient_as_bucket_view=False``): the
    gradients are still allocated by autograd as on one GPU and copied into / back from the buckets
    (no allocation), so DDP only adds the buckets: one bucket of every gradient from construction through
    the first step, replaced at the start of the second step's forward by the rebuilt 25 MiB buckets
    (see :func:`_ddp_build`, :func:`_ddp_buckets`)."""
    d = dims_for(spec, opts)
    s = _Seq()
    params = _params(d)
    if include_build:
        for _, numel in params:
            s.a(numel * d.wbytes)
        if d.tied:  # from_pretrained materializes lm_head's own weight, then ties it to the embedding: the
            s.f(s.a(d.vocab * d.h * d.wbytes))  # copy is freed, its segment stays cached (every tied trace)
    bucket = _ddp_build(s, d, params) if ddp else None
    s.req.append(("reset", 0, 0))
    states: dict = {}
    n, h, c = d.n, d.h, 2
    for k in range(steps):
        grads: dict = {}
        if ddp and k == 1:  # Reducer::rebuild_buckets in the second forward
            s.f(bucket)
            for nbytes in _ddp_buckets(d):
                s.a(nbytes)
        emb = s.a(n * h * d.abytes)
        if k == 0:  # the forward thread's cuBLAS workspace, at the first matmul (the rotary embedding)
            s.a(CUBLAS_WORKSPACE_BYTES)
        x = emb
        saved = []
        inputs = []
        if d.mixed:
            dy = _mixed_forward_backward(s, d, k, emb, grads)
        else:
            for _li in range(d.layers):
                out, sv = _layer_fwd(s, d, x, keep=not d.checkpointing,
                                     free_input=x != emb and not d.checkpointing)
                saved.append(sv)
                inputs.append(x)
                x = out
            # final norm, lm_head, loss
            yf, nf = _norm_fwd(s, d, keep=True)
            s.f(x)
            logits, l32, lsm = _loss_fwd(s, n, d.vocab, c)
            s.f(l32)
            s.f(logits)
            if not d.checkpointing:
                s.f(emb)
            gb = _loss_bwd(s, n, d.vocab, c, lsm)
            grads["lm_head"] = s.a(d.vocab * h * d.wbytes)
            if k == 0:  # the autograd thread's own cuBLAS handle and workspace, at its first matmul
                s.a(CUBLAS_WORKSPACE_BYTES)
            dy = s.a(n * h * c)
            s.f(gb)
            s.f(yf)
            dy = _rmsnorm_bwd(s, d, dy, nf, ckpt=False)  # the final norm is outside the checkpoints
            for li in reversed(range(d.layers)):
                sv = saved[li]
                if d.checkpointing:
                    _, sv = _layer_fwd(s, d, inputs[li], keep=True, stop_early=True)
                    s.f(sv.pop("h1"))
                frame = inputs[li] if d.checkpointing else None  # dies with its checkpoint frame
                dy = _decoder_layer_bwd(s, d, li, dy, sv, grads, frame=frame)
        # embedding backward (+ tied accumulation)
        ge = s.a(d.vocab * h * d.wbytes)
        # embedding_backward_cuda_kernel (EmbeddingBackwardKernel.cu): fp32 sums per partial segment,
        # max_partial_segment = numel / NROWS_PER_THREAD (10) + min(numel, num_weights) rows
        s.f(s.a((n // 10 + min(n, d.vocab)) * h * 4))
        s.f(dy)
        if d.tied and d.mixed:  # lm_head's fp32 gradient (a plain ToCopyBackward output) was stolen as .grad:
            s.f(ge)  # AccumulateGrad adds the embedding's into it in place
            ge = grads.pop("lm_head")
        elif d.tied:  # the two gradients of the shared weight summed out of place (the first is a view)
            acc = s.a(d.vocab * h * d.wbytes)
            s.f(grads.pop("lm_head"), ge)
            ge = acc
        grads["embed"] = ge
        _optimizer(s, d, params, grads, states, first=(k == 0))
        s.f(*(grads[name] for name, _ in params if name in grads))  # zero_grad(set_to_none=True)
    return s.req


@dataclass
class TrainingSim:
    """Simulated peaks of a training run (bytes)."""

    peak_allocated: int
    peak_reserved: int

    @property
    def gap(self) -> int:
        """Peak reserved minus peak allocated."""
        return self.peak_reserved - self.peak_allocated


def simulate_training(spec, opts, steps: int = 3, ddp: bool = False) -> TrainingSim:
    """Generate the sequence of ``steps`` steps and run it through the caching-allocator model
    (:func:`ftcalc.model.allocsim.allocator.simulate_peaks`, the rules of :class:`ftcalc.model.allocsim.allocator.CachingAllocator`).
    Peaks are measured after the build, like ``ftcalc profile``. ``ddp``: one rank of
    DistributedDataParallel (see :func:`step_sequence`)."""
    peak_reserved, peak_allocated, _ = simulate_peaks(step_sequence(spec, opts, steps, ddp=ddp))
    return TrainingSim(peak_allocated, peak_reserved)
