"""The float64 definition: the seed's arithmetic, and the formula checked by other means."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onebyone.reference import conv1x1_reference, pixel_sum


def test_the_seeds_two_printed_cells():
    # "1 * 0.1 + 3 * 0.2 + 1 * 0.4 = 1.1 for output T[0,0]" and "... = 2.2 for T[1,0]"
    x = np.zeros((3, 2, 1))
    x[:, 0, 0] = [1, 3, 1]
    x[:, 1, 0] = [4, 3, 3]
    w = [0.1, 0.2, 0.4]
    out = conv1x1_reference(x, w)
    assert out.shape == (1, 2, 1)
    np.testing.assert_allclose(out[0, :, 0], [1.1, 2.2], atol=1e-12)
    assert pixel_sum(x, w, 0, 0) == [(0.1, 1.0), (0.2, 3.0), (0.4, 1.0)]
    assert sum(a * b for a, b in pixel_sum(x, w, 1, 0)) == pytest.approx(2.2)


def test_pixel_sum_picks_the_filter_and_checks_shapes():
    x = np.arange(12.0).reshape(2, 2, 3)
    w = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert pixel_sum(x, w, 1, 2, k=1) == [(0.0, 5.0), (2.0, 11.0)]
    with pytest.raises(ValueError, match=r"\(1, 3\)"):
        pixel_sum(x, np.ones(3), 0, 0)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 2),
    cg=st.integers(1, 4),
    kg=st.integers(1, 3),
    groups=st.integers(1, 3),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    sh=st.integers(1, 3),
    sw=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_agrees_with_einsum(n, cg, kg, groups, h, w, sh, sw, seed):
    # the same formula said another way: a per-group tensor contraction over the channels
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cg * groups, h, w))
    wt = rng.standard_normal((kg * groups, cg))
    b = rng.standard_normal(kg * groups)
    xs = x[:, :, ::sh, ::sw].reshape(n, groups, cg, len(range(0, h, sh)), len(range(0, w, sw)))
    expected = np.einsum("gkc,ngchw->ngkhw", wt.reshape(groups, kg, cg), xs)
    expected = expected.reshape(n, kg * groups, *xs.shape[3:])
    expected += b[None, :, None, None]
    got = conv1x1_reference(x, wt, b, stride=(sh, sw), groups=groups)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    np.testing.assert_allclose(conv1x1_reference(x, wt, b, stride=(sh, sw), groups=groups, activation="relu"),
                               np.maximum(expected, 0), atol=1e-12)
    np.testing.assert_allclose(
        conv1x1_reference(x * 5, wt, b * 5, stride=(sh, sw), groups=groups, activation="relu6"),
        np.clip(expected * 5, 0, 6),
        atol=1e-12,
    )


def test_unbatched_and_4d_weights():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 4))
    w = rng.standard_normal((2, 3, 1, 1))
    np.testing.assert_array_equal(conv1x1_reference(x, w), conv1x1_reference(x[None], w[:, :, 0, 0])[0])


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"x": np.ones((3, 4)), "w": np.ones((2, 3))}, "(3, 4)"),
        ({"x": np.ones((3, 4, 4)), "w": np.ones((2, 4))}, "shapes do not agree"),
        ({"x": np.ones((4, 4, 4)), "w": np.ones((2, 2)), "groups": 3}, "groups=3"),
        ({"x": np.ones((3, 4, 4)), "w": np.ones((2, 3)), "stride": 0}, "stride"),
        ({"x": np.ones((3, 4, 4)), "w": np.ones((2, 3)), "b": np.ones(3)}, "2 values"),
        ({"x": np.ones((3, 4, 4)), "w": np.ones((2, 3)), "activation": "tanh"}, "'tanh'"),
    ],
)
def test_bad_input(kwargs, words):
    with pytest.raises(ValueError) as info:
        conv1x1_reference(**kwargs)
    assert words in str(info.value)
