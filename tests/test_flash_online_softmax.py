import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from attn_course.flash.online_softmax import (
    online_logsumexp,
    online_normalizer,
    online_softmax,
    online_update,
)
from attn_course.softmax import softmax
from attn_course.testing import assert_close
from tests.reference import softmax_loop


@pytest.mark.parametrize("block", [1, 3, 7, 64])
@pytest.mark.parametrize("shape", [(1,), (5,), (3, 17), (2, 4, 9)])
def test_online_softmax_matches_torch_and_two_pass(rng, shape, block):
    x = rng.standard_normal(shape) * 10
    expected = torch.softmax(torch.from_numpy(x), dim=-1).numpy()
    assert_close(online_softmax(x, block=block), expected, "online vs torch.softmax")
    assert_close(online_softmax(x, block=block), softmax(x), "online vs two-pass")
    assert_close(online_logsumexp(x, block=block),
                 torch.logsumexp(torch.from_numpy(x), dim=-1).numpy(), "online logsumexp")


def test_online_softmax_other_axis_and_large_logits(rng):
    x = rng.standard_normal((6, 4)) * 1000  # exp would overflow without the running max
    out = online_softmax(x, block=2, axis=0)
    expected = np.array([softmax_loop(col) for col in x.T]).T
    assert_close(out, expected, "axis=0, large logits")
    assert np.isfinite(out).all()


def test_rows_of_minus_inf_give_zeros_and_blocks_without_finite_values_are_skipped():
    x = np.array([[-np.inf] * 5,
                  [-np.inf, -np.inf, 1.0, 2.0, -np.inf],
                  [3.0, -np.inf, -np.inf, -np.inf, -np.inf]])
    p = online_softmax(x, block=2)
    for row, expected in zip(p, x, strict=True):
        assert_close(row, np.array(softmax_loop(list(expected))), "row")
    lse = online_logsumexp(x, block=2)
    assert lse[0] == -np.inf
    assert_close(lse[1:], np.array([np.logaddexp(1.0, 2.0), 3.0]), "lse")


def test_online_update_rescales_the_previous_sum():
    m, l, alpha, p = online_update(np.array([1.0]), np.array([2.0]), np.array([[3.0, 0.0]]))
    assert m[0] == 3.0
    assert_close(alpha, np.exp([1.0 - 3.0]), "alpha")
    assert_close(p, np.exp([[0.0, -3.0]]), "p")
    assert_close(l, 2.0 * np.exp([-2.0]) + 1.0 + np.exp([-3.0]), "l")


@settings(max_examples=40, deadline=None)
@given(x=arrays(np.float64, st.integers(1, 40),
                elements=st.floats(-50, 50, allow_nan=False, allow_infinity=False)),
       block=st.integers(1, 41))
def test_normalizer_is_independent_of_the_block_size(x, block):
    m, l = online_normalizer(x, block=block)
    assert m == x.max()
    assert_close(np.float64(l), np.float64(np.exp(x - x.max()).sum()), "l")


@pytest.mark.parametrize("block", [0, -1, 2.5, True])
def test_bad_block_is_rejected(block):
    with pytest.raises(ValueError, match="block must be a positive integer"):
        online_softmax(np.zeros(3), block=block)


def test_bad_x_is_rejected():
    with pytest.raises(TypeError, match="x must be a numpy array or torch tensor"):
        online_softmax([1.0, 2.0])
