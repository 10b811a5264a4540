"""A pure-Python model of PyTorch's CUDA caching allocator (one device, any number of streams).

Mirrors ``DeviceCachingAllocator`` in ``c10/cuda/CUDACachingAllocator.cpp`` (torch 2.x, default
settings: no ``max_split_size_mb``, no ``expandable_segments``, no ``roundup_power2_divisions``, no
garbage-collection threshold) so that the *reserved* bytes (sum of the ``cudaMalloc``'d segments) of a
sequence of tensor allocations and frees can be predicted without a GPU. The rules, with the names of
the C++ source:

- ``round_size``: a request is rounded up to a multiple of ``kMinBlockSize`` (512 B); below 512 B it
  becomes 512 B.
- ``get_pool``: rounded sizes ``<= kSmallSize`` (1 MiB) go to the *small* pool, larger ones to the
  *large* pool. The pools never share segments.
- ``get_allocation_size`` (size of a new segment when no cached block fits): small requests get a
  ``kSmallBuffer`` (2 MiB) segment; large requests below ``kMinLargeAlloc`` (10 MiB) get a
  ``kLargeBuffer`` (20 MiB) segment; larger ones get exactly their size rounded up to ``kRoundLarge``
  (2 MiB).
- ``get_free_block``: best fit, ``pool.blocks.lower_bound(search_key)`` on a set ordered by
  (stream, size, address): the smallest free block whose size is ``>=`` the request, ties to the lowest
  address. With the default ``max_split_size`` (SIZE_MAX) the two "oversize" checks never fire, so any
  cached block, however large, may serve a request (and is then split).
- ``should_split``: after taking a block of ``block.size`` for a request of ``size``, the remainder
  becomes a new free block when ``remaining >= kMinBlockSize`` (small pool) or
  ``remaining > kSmallSize`` (large pool, with default ``max_split_size``). Otherwise the whole block
  is handed out (a large-pool request can hold up to 1 MiB more than it asked for). The allocated part
  is the *low* address end; the remainder keeps the high end (``alloc_found_block``).
- ``free_block`` / ``try_merge_blocks``: a freed block is merged with its ``prev`` and ``next``
  neighbours when these are free. Neighbours are blocks split from the same segment, so merging never
  crosses a segment boundary (two adjacent ``cudaMalloc`` regions stay two blocks).
- Streams (``Block::stream``, ``BlockPool`` ordered by (stream, size, address)): every block belongs to
  the stream it was allocated on, and so does its segment; a free block is reused only by a request on
  that same stream (``get_free_block`` stops at the first block of another stream), in the small and the
  large pool alike. Merging stays within a segment, hence within a stream. A block used on other streams
  (``recordStream``) is not returned at ``free``: the allocator records CUDA events on those streams
  (``insert_events``, trace action ``free_requested``) and returns the block to its pool only when they
  have completed (``process_events`` at the start of a later ``malloc``, action ``free_completed``).
  The simulator takes ``free`` to be the moment the block is returned (a recorded trace: its
  ``free_completed``).
- Segments are returned to the driver (``release_cached_blocks``: every free, unsplit segment) only
  when a ``cudaMalloc`` fails. With ``capacity`` set, the simulator applies the same sequence as
  ``malloc``: best fit, else ``cudaMalloc``, else release all free whole segments and retry, else OOM.
  Without ``capacity`` (the default) ``cudaMalloc`` never fails and reserved memory only grows.

Addresses of new segments matter only for ties in best fit (equal-sized free blocks). The CUDA driver,
as seen in the recorded traces, places successive large ``cudaMalloc`` regions at decreasing
addresses; ``CachingAllocator`` does the same by default (``address_order="down"``). A replay can also
pass the recorded segment addresses.

Entry points: :class:`CachingAllocator` (``malloc`` / ``free`` / ``reserved`` / ``peak_reserved``),
:func:`simulate` (a whole request sequence) and :func:`replay_trace` (a recorded
``torch.cuda.memory._record_memory_history`` device trace, as written by ``scripts/alloc_trace.py``).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "K_MIN_BLOCK_SIZE", "K_SMALL_SIZE", "K_SMALL_BUFFER", "K_LARGE_BUFFER", "K_MIN_LARGE_ALLOC",
    "K_ROUND_LARGE", "round_size", "allocation_size", "is_small", "Block", "CachingAllocator",
    "OutOfMemory", "SimResult", "simulate", "simulate_peaks", "replay_trace", "ReplayResult",
]

K_MIN_BLOCK_SIZE = 512  # all sizes are rounded to at least 512 bytes
K_SMALL_SIZE = 1 << 20  # largest "small" allocation is 1 MiB
K_SMALL_BUFFER = 2 << 20  # "small" allocations are packed in 2 MiB blocks
K_LARGE_BUFFER = 20 << 20  # allocations between 1 and 10 MiB may use kLargeBuffer
K_MIN_LARGE_ALLOC = 10 << 20  # allocations between 1 and 10 MiB may use kLargeBuffer
K_ROUND_LARGE = 2 << 20  # round up large allocations to 2 MiB


def round_size(size: int) -> int:
    """``round_size``: the block size of a request of ``size`` bytes (multiple of 512, at least 512)."""
    if size < K_MIN_BLOCK_SIZE:
        return K_MIN_BLOCK_SIZE
    return K_MIN_BLOCK_SIZE * ((size + K_MIN_BLOCK_SIZE - 1) // K_MIN_BLOCK_SIZE)


def is_small(rounded: int) -> bool:
    """``get_pool``: True when a rounded request belongs to the small pool (``<= kSmallSize``)."""
    return rounded <= K_SMALL_SIZE


def allocation_size(rounded: int) -> int:
    """``get_allocation_size``: the size of the segment ``cudaMalloc``'d for a rounded request."""
    if rounded <= K_SMALL_SIZE:
        return K_SMALL_BUFFER
    if rounded < K_MIN_LARGE_ALLOC:
        return K_LARGE_BUFFER
    return K_ROUND_LARGE * ((rounded + K_ROUND_LARGE - 1) // K_ROUND_LARGE)


def _should_split(small: bool, block_size: int, size: int) -> bool:
    """``should_split`` with the default ``max_split_size`` (SIZE_MAX)."""
    remaining = block_size - size
    return remaining >= K_MIN_BLOCK_SIZE if small else remaining > K_SMALL_SIZE


class OutOfMemory(RuntimeError):
    """Raised when ``capacity`` is set and a segment cannot be allocated even after releasing the cache."""


@dataclass(eq=False)
class Block:
    """A block of a segment: ``[addr, addr + size)``; ``prev``/``next`` are its neighbours in the segment."""

    addr: int
    size: int
    small: bool
    seg: int  # address of the segment's first byte (identifies the segment)
    stream: int = 0  # the stream the segment was allocated on (``Block::stream``)
    allocated: bool = False
    requested: int = 0
    prev: Block | None = field(default=None, repr=False)
    next: Block | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[int, int]:
        """The order of ``BlockComparatorSize`` within one stream: size, then address."""
        return (self.size, self.addr)


class _Pool:
    """A ``BlockPool``: free blocks ordered by (size, address), with best-fit lookup."""

    def __init__(self, small: bool) -> None:
        self.small = small
        self.keys: list[tuple[int, int]] = []
        self.blocks: dict[tuple[int, int], Block] = {}

    def insert(self, b: Block) -> None:
        k = b.key
        bisect.insort(self.keys, k)
        self.blocks[k] = b

    def erase(self, b: Block) -> None:
        k = b.key
        i = bisect.bisect_left(self.keys, k)
        assert self.keys[i] == k
        del self.keys[i]
        del self.blocks[k]

    def best_fit(self, size: int) -> Block | None:
        """``get_free_block``: the smallest free block of at least ``size`` bytes (lowest address on ties)."""
        i = bisect.bisect_left(self.keys, (size, -1))
        if i == len(self.keys):
            return None
        return self.blocks[self.keys[i]]


class CachingAllocator:
    """The caching allocator of one device.

    ``malloc(size, stream=0)`` returns a handle (the block's address) and ``free(handle)`` returns the block
    to the cache of its stream. ``reserved`` is the sum of the segment sizes, ``allocated`` the sum of the
    allocated block sizes (as ``torch.cuda.memory_reserved`` / ``memory_allocated`` count them, over all
    streams); ``peak_reserved`` and ``peak_allocated`` their maxima since construction or
    :meth:`reset_peaks`. ``stream`` is any integer naming a CUDA stream (0: the default stream); each
    stream has its own small and large pool (``pools[(stream, small)]``).

    ``capacity`` (bytes of device memory ``cudaMalloc`` may hand out, None = unlimited) enables the
    allocator's retry path: on failure, all free unsplit segments are released (``release_cached_blocks``)
    and the ``cudaMalloc`` retried. ``address_order`` ("down" or "up") places new segments below or above
    the previous ones (only matters for best-fit ties).
    """

    def __init__(self, capacity: int | None = None, address_order: str = "down",
                 base: int = 1 << 47) -> None:
        if address_order not in ("down", "up"):
            raise ValueError("address_order must be 'down' or 'up'")
        self.capacity = capacity
        self.address_order = address_order
        self._next_addr = base
        self.pools: dict[tuple[int, bool], _Pool] = {}  # (stream, small) -> BlockPool
        self.segments: dict[int, int] = {}  # segment address -> size
        self._seg_starts: list[int] = []  # sorted segment addresses (overlap check of given addresses)
        self.segment_stream: dict[int, int] = {}  # segment address -> stream
        self.active: dict[int, Block] = {}  # allocated block address -> block
        self.reserved = 0
        self.allocated = 0
        self.requested = 0
        self.peak_reserved = 0
        self.peak_allocated = 0
        self.num_segment_allocs = 0
        self.num_segment_frees = 0
        self.segment_log: list[tuple[int, int]] = []  # (address, size) of every cudaMalloc, in order

    def pool(self, small: bool, stream: int = 0) -> _Pool:
        """The free blocks of ``stream``'s small or large pool."""
        p = self.pools.get((stream, small))
        if p is None:
            p = self.pools[(stream, small)] = _Pool(small)
        return p

    # -- segments -------------------------------------------------------------------------------
    def _new_address(self, size: int) -> int:
        if self.address_order == "down":
            self._next_addr -= size
            return self._next_addr
        addr = self._next_addr
        self._next_addr += size
        return addr

    def _overlaps(self, addr: int, size: int) -> bool:
        """True when ``[addr, addr + size)`` overlaps a segment already held (a given address that the
        simulation cannot honour because its own segments differ from the device's)."""
        i = bisect.bisect_right(self._seg_starts, addr)
        if i > 0 and self._seg_starts[i - 1] + self.segments[self._seg_starts[i - 1]] > addr:
            return True
        return i < len(self._seg_starts) and self._seg_starts[i] < addr + size

    def _alloc_segment(self, size: int, small: bool, addr: int | None = None, stream: int = 0) -> Block | None:
        """``alloc_block``: ``cudaMalloc`` a new segment of ``size`` bytes for ``stream`` (None when over
        ``capacity``)."""
        if self.capacity is not None and self.reserved + size > self.capacity:
            return None
        if addr is None or self._overlaps(addr, size):
            addr = self._new_address(size)
            while self._overlaps(addr, size):
                addr = self._new_address(size)
        self.segments[addr] = size
        bisect.insort(self._seg_starts, addr)
        self.segment_stream[addr] = stream
        self.segment_log.append((addr, size))
        self.reserved += size
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        self.num_segment_allocs += 1
        return Block(addr, size, small, addr, stream)

    def release_cached_blocks(self) -> int:
        """``release_cached_blocks``: ``cudaFree`` every free segment that is not split (all streams);
        returns bytes freed."""
        freed = 0
        for pool in self.pools.values():
            for b in [b for b in pool.blocks.values() if b.prev is None and b.next is None]:
                pool.erase(b)
                del self.segments[b.seg]
                del self.segment_stream[b.seg]
                self._seg_starts.remove(b.seg)
                self.reserved -= b.size
                self.num_segment_frees += 1
                freed += b.size
        return freed

    # -- malloc / free ------------------------------------------------------------------------------
    def malloc(self, nbytes: int, *, stream: int = 0, segment_addr: int | None = None) -> int:
        """Allocate ``nbytes`` (the tensor's byte size, before rounding) on ``stream``; returns the block's
        address.

        Follows ``DeviceCachingAllocator::malloc``: round, pick the stream's pool, best fit among that
        stream's free blocks, else a new segment of ``allocation_size`` bytes (at ``segment_addr`` if
        given), else release the cache and retry, then ``alloc_found_block`` (split when ``should_split``).
        """
        size = round_size(nbytes)
        small = is_small(size)
        pool = self.pool(small, stream)
        block = pool.best_fit(size)
        if block is not None:
            pool.erase(block)
        else:
            seg_size = allocation_size(size)
            block = self._alloc_segment(seg_size, small, segment_addr, stream)
            if block is None:
                self.release_cached_blocks()
                block = self._alloc_segment(seg_size, small, segment_addr, stream)
            if block is None:
                raise OutOfMemory(f"cannot allocate {nbytes} B: reserved {self.reserved} B, "
                                  f"capacity {self.capacity} B")
        if _should_split(small, block.size, size):
            rest = Block(block.addr + size, block.size - size, small, block.seg, stream, prev=block,
                         next=block.next)
            if block.next is not None:
                block.next.prev = rest
            block.next = rest
            block.size = size
            pool.insert(rest)
        block.allocated = True
        block.requested = nbytes
        self.active[block.addr] = block
        self.allocated += block.size
        self.requested += nbytes
        self.peak_allocated = max(self.peak_allocated, self.allocated)
        return block.addr

    def free(self, addr: int) -> None:
        """``free_block``: return the block at ``addr`` to its stream's pool, merged with free neighbours."""
        block = self.active.pop(addr)
        block.allocated = False
        self.allocated -= block.size
        self.requested -= block.requested
        pool = self.pool(block.small, block.stream)
        prev, nxt = block.prev, block.next
        if prev is not None and not prev.allocated:  # try_merge_blocks(block, prev)
            pool.erase(prev)
            block.addr = prev.addr
            block.size += prev.size
            block.prev = prev.prev
            if block.prev is not None:
                block.prev.next = block
        if nxt is not None and not nxt.allocated:  # try_merge_blocks(block, next)
            pool.erase(nxt)
            block.size += nxt.size
            block.next = nxt.next
            if block.next is not None:
                block.next.prev = block
        pool.insert(block)

    def reset_peaks(self) -> None:
        """``torch.cuda.reset_peak_memory_stats``: the peaks restart from the current values."""
        self.peak_reserved = self.reserved
        self.peak_allocated = self.allocated

    def fragmentation(self) -> int:
        """Reserved minus allocated bytes now (cached free blocks + rounding)."""
        return self.reserved - self.allocated

    def largest_free(self, small: bool = False, stream: int = 0) -> int:
        """Size of the largest cached free block of a stream's pool (0 when none)."""
        keys = self.pool(small, stream).keys
        return keys[-1][0] if keys else 0

    def reserved_by_stream(self) -> dict[int, int]:
        """Bytes of the segments held now, per stream."""
        out: dict[int, int] = {}
        for seg, size in self.segments.items():
            st = self.segment_stream[seg]
            out[st] = out.get(st, 0) + size
        return out

    def free_by_stream(self) -> dict[int, int]:
        """Bytes of cached free blocks now, per stream (the part of ``reserved`` nothing is allocated in,
        rounding excluded)."""
        out: dict[int, int] = {}
        for (st, _), pool in self.pools.items():
            out[st] = out.get(st, 0) + sum(k[0] for k in pool.keys)
        return out


@dataclass
class SimResult:
    """Outcome of :func:`simulate`: peaks over the whole sequence and per-request reserved/allocated."""

    peak_reserved: int
    peak_allocated: int
    reserved: list[int]
    allocated: list[int]
    allocator: CachingAllocator

    @property
    def gap_at_peaks(self) -> int:
        """Peak reserved minus peak allocated (the quantity ``torch.cuda.max_memory_*`` report)."""
        return self.peak_reserved - self.peak_allocated


def simulate(requests: Sequence[tuple] | Iterable[tuple],
             allocator: CachingAllocator | None = None, reset_at: int | None = None) -> SimResult:
    """Run a request sequence through the allocator.

    ``requests``: ``("alloc", id, nbytes)`` or ``("alloc", id, nbytes, stream)`` (default stream 0),
    ``("free", id, 0)`` tuples (or ``("reset", 0, 0)`` to reset the peaks, as
    ``torch.cuda.reset_peak_memory_stats``); ``id`` is any hashable naming the tensor. A free returns the
    block to the pool of the stream it was allocated on. ``reset_at``: index of the request before which
    the peaks are reset (alternative to "reset"). Returns the peaks and the reserved / allocated bytes
    after every request.
    """
    a = allocator or CachingAllocator()
    handles: dict = {}
    reserved: list[int] = []
    allocated: list[int] = []
    for i, req in enumerate(requests):
        op, tid, nbytes = req[0], req[1], req[2]
        if i == reset_at:
            a.reset_peaks()
        if op == "alloc":
            handles[tid] = a.malloc(nbytes, stream=req[3] if len(req) > 3 else 0)
        elif op == "free":
            a.free(handles.pop(tid))
        elif op == "reset":
            a.reset_peaks()
        else:
            raise ValueError(f"unknown request {op!r}")
        reserved.append(a.reserved)
        allocated.append(a.allocated)
    return SimResult(a.peak_reserved, a.peak_allocated, reserved, allocated, a)


@dataclass
class ReplayResult:
    """Outcome of :func:`replay_trace` against the recorded numbers."""

    run_id: str
    peak_reserved: int  # simulated, since the "built" mark (as the recorder reset the peaks there)
    peak_allocated: int
    recorded_peak_reserved: int
    recorded_peak_allocated: int
    segment_allocs: int  # simulated
    recorded_segment_allocs: int
    segment_size_mismatches: int  # recorded segment_alloc events whose size (or stream) the simulation did not produce
    reserved_at_marks: list[tuple[str, int, int]]  # (mark, simulated, recorded)
    address_mismatches: int  # allocations placed elsewhere than on the device (meaningful with recorded addresses)
    peak_reserved_event: int = 0  # index of the trace event at which the simulated reserved peak was first reached
    reserved_by_stream_at_peak: dict[int, int] = field(default_factory=dict)  # segments per stream there
    allocated_by_stream_at_peak: dict[int, int] = field(default_factory=dict)  # allocated blocks per stream there
    streams: list[int] = field(default_factory=list)  # the trace's streams, in order of first use

    @property
    def reserved_error(self) -> float:
        """Relative error of the simulated peak reserved."""
        return self.peak_reserved / self.recorded_peak_reserved - 1.0


def _allocated_by_stream(a: CachingAllocator) -> dict[int, int]:
    out: dict[int, int] = {}
    for b in a.active.values():
        out[b.stream] = out.get(b.stream, 0) + b.size
    return out


def replay_trace(trace: dict, *, use_recorded_addresses: bool = False,
                 address_order: str = "down") -> ReplayResult:
    """Replay a recorded device trace (``scripts/alloc_trace.py`` JSON) through the simulator.

    The ``alloc`` events carry the requested byte size (torch records ``orig_size``; the simulator
    rounds it) and the stream they were made on; each is allocated on that stream. A block is returned to
    its stream's pool at its ``free_completed`` event, matched to the allocation by address: for a block
    used on other streams (``record_stream``, as FSDP2's all-gather outputs and reduce-scatter inputs
    are) the ``free_requested`` event comes first and the block stays allocated until its CUDA events
    complete (``insert_events`` / ``process_events``), so ``free_requested`` is not a return to the pool.
    The recorder ran ``torch.empty(1)`` before recording, which left one free 2 MiB small-pool segment
    on the default stream; it is recreated first. Peaks are reset at the "built" mark as the recorder did.
    Segment allocations of the simulation are compared in order with the recorded ``segment_alloc``
    events (size and stream). ``use_recorded_addresses``: give each new simulated segment the address of
    the corresponding recorded one (best-fit ties then break exactly as on the device; an address that
    would overlap a simulated segment, possible only once the simulation has diverged, is replaced by a
    synthetic one).
    """
    events = trace["trace"]
    a = CachingAllocator(address_order=address_order)
    rec_segs = [e for e in events if e["action"] == "segment_alloc"]
    streams = list(dict.fromkeys(e.get("stream", 0) for e in events if e["action"] == "alloc"))
    default_stream = streams[0] if streams else 0
    # the small segment left by torch.empty(1) before recording: placed at the first small alloc
    first_small = next((e for e in events if e["action"] == "alloc" and is_small(round_size(e["size"]))
                        and e.get("stream", 0) == default_stream), None)
    pre_addr = first_small["addr"] if first_small is not None else None
    pre_seg = a._alloc_segment(K_SMALL_BUFFER, True, pre_addr, default_stream)
    a.pool(True, default_stream).insert(pre_seg)
    marks = {m["event_index"]: m for m in trace.get("marks", [])}
    built = next((m["event_index"] for m in trace.get("marks", []) if m["name"] == "built"), 0)
    handles: dict[int, int] = {}
    rec_iter = iter(rec_segs)
    at_marks: list[tuple[str, int, int]] = []
    sim_segs: list[tuple[int, int]] = []  # (size, stream) of every simulated cudaMalloc
    addr_mism = 0
    peak_event, by_stream, alloc_by_stream = 0, {}, {}
    for i, e in enumerate(events):
        if i == built:
            a.reset_peaks()
            peak_event, by_stream, alloc_by_stream = i, a.reserved_by_stream(), _allocated_by_stream(a)
        if i in marks:
            at_marks.append((marks[i]["name"], a.reserved, marks[i]["reserved"]))
        act = e["action"]
        if act == "alloc":
            stream = e.get("stream", 0)
            n_before = a.num_segment_allocs
            addr = None
            if use_recorded_addresses:
                size = round_size(e["size"])
                if a.pool(is_small(size), stream).best_fit(size) is None:
                    nxt = next(rec_iter, None)
                    addr = nxt["addr"] if nxt is not None else None
            peak_before = a.peak_reserved
            handles[e["addr"]] = got = a.malloc(e["size"], stream=stream, segment_addr=addr)
            addr_mism += got != e["addr"]
            if a.num_segment_allocs > n_before:
                sim_segs.append((a.segment_log[-1][1], stream))
            if i >= built and a.peak_reserved > peak_before:
                peak_event, by_stream, alloc_by_stream = i, a.reserved_by_stream(), _allocated_by_stream(a)
        elif act == "free_completed":
            a.free(handles.pop(e["addr"]))
    rec = [(e["size"], e.get("stream", 0)) for e in rec_segs]
    mism = sum(1 for x, y in zip(sim_segs, rec, strict=False) if x != y)
    mism += abs(len(sim_segs) - len(rec))
    return ReplayResult(
        run_id=trace.get("run_id", "?"), peak_reserved=a.peak_reserved, peak_allocated=a.peak_allocated,
        recorded_peak_reserved=trace["peak_reserved_bytes"], recorded_peak_allocated=trace["peak_allocated_bytes"],
        segment_allocs=a.num_segment_allocs - 1, recorded_segment_allocs=len(rec_segs),
        segment_size_mismatches=mism, reserved_at_marks=at_marks, address_mismatches=addr_mism,
        peak_reserved_event=peak_event, reserved_by_stream_at_peak=by_stream,
        allocated_by_stream_at_peak=alloc_by_stream, streams=streams)


def simulate_peaks(requests: Iterable[tuple]) -> tuple[int, int, dict[int, int]]:
    """``simulate(requests, CachingAllocator())`` reduced to what the planner reads: (peak reserved, peak
    allocated, reserved bytes per stream at the end), several times faster.

    The same rules as :class:`CachingAllocator` with its defaults (no ``capacity``, so no segment is ever
    released; new segments at decreasing addresses from ``1 << 47``; no given segment addresses), in one loop
    without method calls: a block is a list ``[addr, size, allocated, prev, next, pool]``, and a pool's
    (size, address) order is kept as one integer per free block, ``size << 48 | addr`` (addresses stay below
    ``1 << 47``), so best fit is one ``bisect`` on a list of ints. tests/model/allocsim/test_allocator.py runs both on the
    planner's sequences and on random ones and compares every number.
    """
    from bisect import bisect_left, insort

    shift = 48
    pools: dict[int, tuple[list[int], dict[int, list]]] = {}  # 2 * stream + small -> (keys, blocks)
    handles: dict = {}
    by_stream: dict[int, int] = {}
    next_addr = 1 << 47
    reserved = allocated = peak_r = peak_a = 0
    for req in requests:
        op = req[0]
        if op == "alloc":
            nbytes = req[2]
            stream = req[3] if len(req) == 4 else 0
            size = 512 if nbytes < 512 else ((nbytes + 511) >> 9) << 9  # round_size (kMinBlockSize = 512)
            small = size <= 1048576  # kSmallSize
            pool = pools.get(2 * stream + small)
            if pool is None:
                pool = pools[2 * stream + small] = ([], {})
            keys, blocks = pool
            i = bisect_left(keys, size << shift)
            if i < len(keys):
                b = blocks.pop(keys.pop(i))
            else:
                seg = allocation_size(size)
                next_addr -= seg
                if next_addr < 0:
                    raise OverflowError("simulate_peaks: more than 2^47 bytes reserved")
                b = [next_addr, seg, False, None, None, pool]
                reserved += seg
                if reserved > peak_r:
                    peak_r = reserved
                by_stream[stream] = by_stream.get(stream, 0) + seg
            rem = b[1] - size
            if (rem >= 512) if small else (rem > 1048576):  # should_split
                nxt = b[4]
                rest = [b[0] + size, rem, False, b, nxt, pool]
                if nxt is not None:
                    nxt[3] = rest
                b[4] = rest
                b[1] = size
                k = (rem << shift) | rest[0]
                insort(keys, k)
                blocks[k] = rest
            b[2] = True
            handles[req[1]] = b
            allocated += b[1]
            if allocated > peak_a:
                peak_a = allocated
        elif op == "free":
            b = handles.pop(req[1])
            b[2] = False
            allocated -= b[1]
            keys, blocks = b[5]
            prev = b[3]
            if prev is not None and not prev[2]:
                k = (prev[1] << shift) | prev[0]
                del keys[bisect_left(keys, k)]
                del blocks[k]
                b[0] = prev[0]
                b[1] += prev[1]
                b[3] = pp = prev[3]
                if pp is not None:
                    pp[4] = b
            nxt = b[4]
            if nxt is not None and not nxt[2]:
                k = (nxt[1] << shift) | nxt[0]
                del keys[bisect_left(keys, k)]
                del blocks[k]
                b[1] += nxt[1]
                b[4] = nn = nxt[4]
                if nn is not None:
                    nn[3] = b
            k = (b[1] << shift) | b[0]
            insort(keys, k)
            blocks[k] = b
        elif op == "reset":
            peak_r, peak_a = reserved, allocated
        else:
            raise ValueError(f"unknown request {op!r}")
    return peak_r, peak_a, by_stream
