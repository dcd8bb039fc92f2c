"""machine.peaks(): measured limits, cached by key, and the roofline built on them."""

import itertools
import json
import time

import pytest
import torch

from onebyone import machine, ops


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    return tmp_path


def test_peaks_are_measured_then_cached(cache_home):
    first = machine.peaks(repeats=1)
    assert first.gemm_gflops > 0.5 and first.bandwidth_gbs > 0.1
    assert machine.cache_path().is_relative_to(cache_home)
    stored = json.loads(machine.cache_path().read_text())
    assert list(stored.values()) == [first.to_dict()]
    # a second call reads the cache: the very same figures, timestamp included
    assert machine.peaks(repeats=1) == first


def test_corrupt_cache_is_measured_again(cache_home):
    machine.cache_path().parent.mkdir(parents=True)
    machine.cache_path().write_text("{not json")
    assert machine.peaks(repeats=1).gemm_gflops > 0


def test_roofline_takes_the_slower_bound():
    p = machine.Peaks(100.0, 10.0, "cpu", "test", 1, "x", "now")
    assert machine.roofline_seconds(200e9, 1e9, p) == pytest.approx(2.0)  # compute-bound
    assert machine.roofline_seconds(1e9, 50e9, p) == pytest.approx(5.0)  # memory-bound
    with pytest.raises(ValueError, match="flops"):
        machine.roofline_seconds(-1, 0, p)


def test_the_bandwidth_of_a_working_set_the_caches_hold():
    ladder = ((1_000, 400.0), (2_000, 300.0), (4_000, 100.0), (8_000, 120.0))
    p = machine.Peaks(100.0, 10.0, "cpu", "test", 1, "x", "now", cache_bandwidth=ladder)
    assert p.bandwidth_for(500) == 400.0  # below the smallest size measured: the fastest
    assert p.bandwidth_for(1_500) == 400.0  # between two sizes: the one below (an upper bound)
    assert p.bandwidth_for(2_000) == 300.0
    assert p.bandwidth_for(5_000) == 120.0  # a slower point is no bound when a larger size beat it
    assert p.bandwidth_for(16_000) == 120.0
    assert p.bandwidth_for(16_001) == 10.0  # beyond twice the largest: the memory's
    # the roofline's memory bound moves the bytes at their working set's bandwidth
    assert machine.roofline_seconds(0, 2_000, p) == pytest.approx(2_000 / 300e9)
    assert machine.roofline_seconds(0, 1e9, p) == pytest.approx(0.1)
    assert machine.Peaks(100.0, 10.0, "cpu", "test", 1, "x", "now").bandwidth_for(10) == 10.0


def test_cache_bandwidth_measured_for_real_and_kept(cache_home):
    llc = machine._last_level_cache_bytes()
    if not llc:
        pytest.skip("this system does not say how large its caches are")
    ladder = machine._measure_cache_bandwidth(repeats=1)
    sizes = [size for size, _ in ladder]
    assert sizes[0] == 256 * 2**10 and sizes[-1] <= 2 * llc < 2 * sizes[-1]
    assert all(b == 2 * a for a, b in itertools.pairwise(sizes))
    assert all(gbs > 0.1 for _, gbs in ladder)
    p = machine.peaks(repeats=1)
    assert p.cache_bandwidth and machine.peaks(repeats=1) == p  # through the JSON cache and back


def test_a_cached_entry_without_cache_bandwidth_is_measured_again(cache_home, monkeypatch):
    monkeypatch.setattr(machine, "_measure_cache_bandwidth", lambda repeats: ((1024, 99.0),))
    old = machine.peaks(repeats=1).to_dict()
    del old["cache_bandwidth"]
    key = machine._key(torch.device("cpu"))
    machine.cache_path().write_text(json.dumps({key: old}))
    assert machine.peaks(repeats=1).cache_bandwidth == ((1024, 99.0),)


def test_gemm_peak_is_the_fastest_product_at_hand(cache_home, monkeypatch):
    # each product reports a rate; the peak is the largest, and names the product that set it
    monkeypatch.setattr(machine, "_measure_cpu_kernels", lambda repeats: {"oneDNN": 2e6, "onebyone": 3e6})
    p = machine.peaks(repeats=1)
    assert (p.gemm_gflops, p.gemm_by) == (3e6, "onebyone")
    monkeypatch.setattr(machine, "_measure_cpu_kernels", lambda repeats: {})
    machine.cache_path().unlink()
    p = machine.peaks(repeats=1)
    assert p.gemm_by == "torch.mm" and 0 < p.gemm_gflops < 3e6


def test_a_refresh_keeps_the_best_figure_of_the_key(cache_home, monkeypatch):
    # a lower measurement (interference) leaves the stored peak as it was; a higher one replaces it
    monkeypatch.setattr(machine, "_measure_cpu_kernels", lambda repeats: {"onebyone": 3e6})
    first = machine.peaks(repeats=1)
    monkeypatch.setattr(machine, "_measure_cpu_kernels", lambda repeats: {})
    monkeypatch.setattr(machine, "_measure_bandwidth", lambda device, repeats: first.bandwidth_gbs * 2)
    again = machine.peaks(repeats=1, refresh=True)
    assert (again.gemm_gflops, again.gemm_by) == (3e6, "onebyone")
    assert again.bandwidth_gbs == pytest.approx(first.bandwidth_gbs * 2, abs=0.01)
    assert machine.peaks(repeats=1) == again  # and that is what the cache holds


def test_a_probe_raises_the_stored_peak_only_when_it_beats_it(cache_home, monkeypatch):
    first = machine.peaks(repeats=1)
    seen = []

    def kernels(repeats, **kwargs):
        seen.append(kwargs)
        return {"oneDNN": first.gemm_gflops * rate}

    monkeypatch.setattr(machine, "_measure_cpu_kernels", kernels)
    rate = 0.5  # a slow moment: nothing changes
    assert machine.probe_gemm() == first
    rate = 2.0  # a faster one: the peak is raised, stored, and named
    raised = machine.probe_gemm()
    assert raised.gemm_gflops == pytest.approx(2 * first.gemm_gflops, abs=0.01) and raised.gemm_by == "oneDNN"
    assert raised.bandwidth_gbs == first.bandwidth_gbs
    assert machine.peaks() == raised
    assert all(kw["min_seconds"] == 0.0 for kw in seen)  # brief: between a benchmark's shapes


def test_cpu_kernels_measured_for_real():
    rates = machine._measure_cpu_kernels(repeats=1)
    expected = ["oneDNN"] * torch.backends.mkldnn.is_available()
    expected += ["onebyone"] * (ops.native_isa() is not None)
    assert sorted(rates) == expected
    assert all(rate > 0.5 for rate in rates.values())


def test_best_seconds_keeps_sampling_until_the_time_is_filled():
    calls = []
    machine._best_seconds(lambda: calls.append(1), torch.device("cpu"), repeats=2, warmups=0,
                          min_seconds=1e9)
    assert len(calls) == 100  # capped at 50 times the repeats even when the time is never filled
    calls.clear()
    machine._best_seconds(lambda: calls.append(time.sleep(0.01)), torch.device("cpu"), repeats=2,
                          warmups=1, min_seconds=0.1)
    assert 1 + 8 <= len(calls) <= 1 + 15  # a warm-up, then about 0.1 s of 10 ms runs


def test_growing_rate_stops_at_the_first_slow_size():
    made = []

    def make(size):
        made.append(size)
        return (lambda: time.sleep(size * 0.03)), 1e9

    rate = machine._growing_rate(make, (1, 2, 3), repeats=1, warmups=0, slow_seconds=0.05)
    assert made == [1, 2]  # 2 took 0.06 s a run: 3 is never built
    assert 1e9 / 0.03 / 1e9 * 0.5 < rate <= 1e9 / 0.03 / 1e9  # the faster size's rate


def test_cache_key_tells_processor_generations_apart(monkeypatch):
    # virtual machines may report one name ("AMD EPYC") for several generations: the key adds
    # the family, model and stepping where /proc/cpuinfo has them
    model = machine._cpu_model()
    key = machine._key(torch.device("cpu"))
    if model:
        assert f"({model})" in key and model.startswith("family ")
    monkeypatch.setattr(machine, "_cpu_model", lambda: "family 99 model 1 stepping 0")
    assert machine._key(torch.device("cpu")) != key
