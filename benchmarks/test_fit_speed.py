"""Issue 9: any `fit` query under 50 ms in-process."""

from ftcalc.fit import max_fit, min_gpu
from ftcalc.options import make_options


def test_max_seq_len_query(benchmark):
    r = benchmark(max_fit, "8b", make_options(method="qlora"), "rtx-4090", "seq-len")
    assert r.best.fits
    assert benchmark.stats.stats.median < 0.05


def test_min_gpu_query(benchmark):
    r = benchmark(min_gpu, "70b", make_options(method="qlora", seq_len=8192))
    assert r.fitting
    assert benchmark.stats.stats.median < 0.05
