"""Host-speed experiment for launch-bound steps (issue 7's host-bound misses), one GPU, one process.

    python3 lab/benchmarks/host_exp.py OUT.json [MODEL] [SEQ]

Same machine, same process, same model, steps timed in phases (forward + backward to the loss read, update)
under four host conditions in turn: default; Python's cyclic garbage collector off (gc.collect, gc.freeze,
gc.disable, as torchtitan's gc_freq and Megatron's --manual-gc do); the launching thread pinned to one core;
default again (drift). Every step records the time spent inside the collector (gc.callbacks) and the
collections per generation. Run on a "skeleton" first: MODEL's config at tiny width (hidden 256, vocab 2048,
same layers and modules), whose step is launch-bound by construction: the host's time for the same op
sequence. Also: the launch microbenchmark ftcalc profile records, a pure-Python loop, /proc/loadavg, CPU MHz.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def cpu_mhz() -> list[float]:
    try:
        return [float(x.split(":")[1]) for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("cpu MHz")]
    except OSError:
        return []


def pybench(rounds: int = 5) -> float:
    """Seconds for a fixed pure-Python workload (median of rounds)."""
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        d: dict[int, int] = {}
        for i in range(300_000):
            d[i & 1023] = d.get(i & 1023, 0) + i
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


class GcTimer:
    def __init__(self) -> None:
        self.t = 0.0
        self.n = [0, 0, 0]
        self._s = 0.0
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._s = time.perf_counter()
        else:
            self.t += time.perf_counter() - self._s
            self.n[info["generation"]] += 1

    def take(self) -> tuple[float, list[int]]:
        t, n = self.t, self.n
        self.t, self.n = 0.0, [0, 0, 0]
        return t, n


def main() -> None:
    import torch

    from ftcalc.train import recipe
    from ftcalc.tables.catalog import resolve_model
    from ftcalc.model.options import make_options
    from ftcalc.measure.profile import host_info, launch_microseconds

    out_path = Path(sys.argv[1])
    model_name = sys.argv[2] if len(sys.argv) > 2 else "meta-llama/Llama-3.2-3B"
    seq = int(sys.argv[3]) if len(sys.argv) > 3 else 1024
    method = sys.argv[4] if len(sys.argv) > 4 else "full"
    cuda = torch.cuda.is_available()  # CPU only for a dry run of the script
    dev = torch.device("cuda", 0) if cuda else torch.device("cpu")
    dname = "cuda" if cuda else "cpu"
    sync = torch.cuda.synchronize if cuda else (lambda d=None: None)
    if cuda:
        torch.cuda.set_device(dev)
    torch.empty(1, device=dev)
    res: dict = {"host": host_info(), "affinity": len(os.sched_getaffinity(0)), "loadavg0": Path("/proc/loadavg").read_text().strip(),
                 "mhz0": cpu_mhz()[:8], "launch_us0": launch_microseconds(dev) if cuda else None, "pybench0_s": pybench(),
                 "gc_threshold": gc.get_threshold(), "model": model_name, "seq": seq, "method": method, "runs": []}
    timer = GcTimer()
    spec_real = resolve_model(model_name)
    cfg = dict(spec_real.config)
    heads = cfg.get("num_attention_heads", 8)
    kv = max(1, cfg.get("num_key_value_heads", heads) * 8 // heads)
    cfg.update(hidden_size=256, intermediate_size=688, num_attention_heads=8, num_key_value_heads=kv, vocab_size=2048,
               head_dim=32)
    tmp = Path(tempfile.mkdtemp()) / "config.json"
    tmp.write_text(json.dumps(cfg))
    cpu = sorted(os.sched_getaffinity(0))
    for label, spec, s in (("skeleton", resolve_model(str(tmp)), 32), ("real", spec_real, seq)):
        opts = make_options(method=method, seq_len=s, batch_size=1, gradient_checkpointing=True)
        model = recipe.build_model(spec, opts, device=dname, init="random")
        opt = recipe.build_optimizer(model, opts)
        gen = torch.Generator(device=dev).manual_seed(0)
        for cond in ("warm", "default", "gc_off", "pinned", "default2", "gc_off_pinned"):
            if cond.startswith("gc_off"):
                gc.collect()
                gc.freeze()
                gc.disable()
            if "pinned" in cond:
                os.sched_setaffinity(0, {cpu[len(cpu) // 2]})
            steps = []
            for _ in range(3 if cond == "warm" else 12):
                ids = recipe.random_batch(spec.arch.vocab_size, opts, dname, generator=gen)
                sync(dev)
                timer.take()
                t0 = time.perf_counter()
                marks: list[float] = []
                recipe.accumulated_step(model, opt, ids, opts, dname, marks=marks)
                sync(dev)
                t1 = time.perf_counter()
                g, n = timer.take()
                steps.append([round(marks[-1] - t0, 5), round(t1 - marks[-1], 5), round(g, 5), n])
            gc.enable()
            gc.unfreeze()
            os.sched_setaffinity(0, set(cpu))
            fb = [x[0] for x in steps]
            res["runs"].append({"model": label, "layers": spec.arch.num_layers, "cond": cond, "steps": steps,
                                "fb_median": statistics.median(fb), "upd_median": statistics.median(x[1] for x in steps),
                                "gc_s_total": round(sum(x[2] for x in steps), 4)})
            print(label, cond, "fb med %.4f min %.4f max %.4f upd %.4f gc %.4f" % (
                statistics.median(fb), min(fb), max(fb), res["runs"][-1]["upd_median"], res["runs"][-1]["gc_s_total"]),
                flush=True)
        del model, opt
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    res.update(loadavg1=Path("/proc/loadavg").read_text().strip(), mhz1=cpu_mhz()[:8], launch_us1=launch_microseconds(dev) if cuda else None,
               pybench1_s=pybench())
    out_path.write_text(json.dumps(res))


if __name__ == "__main__":
    main()
