"""Speed of `fit` queries in-process, recorded by pytest-benchmark (target: under 50 ms each, read off the
recorded medians; no wall-time assertion: a loaded CI machine doubles it)."""

from ftcalc.model.fit import max_fit, min_gpu
from ftcalc.model.options import make_options


def test_max_seq_len_query(benchmark):
    r = benchmark(max_fit, "8b", make_options(method="qlora"), "rtx-4090", "seq-len")
    assert r.best.fits


def test_min_gpu_query(benchmark):
    r = benchmark(min_gpu, "70b", make_options(method="qlora", seq_len=8192))
    assert r.fitting
