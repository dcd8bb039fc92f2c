"""machine.peaks(): measured limits, cached by key, and the roofline built on them."""

import json

import pytest

from onebyone import machine


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
