import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from attn_course.softmax import entropy, logsumexp, naive_softmax, softmax
from attn_course.testing import assert_close
from tests.reference import softmax_loop

finite_rows = arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 9)),
                     elements=st.floats(-1e4, 1e4))


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (2, 3, 17)])
def test_softmax_matches_loop_and_torch(rng, shape):
    x = rng.standard_normal(shape) * 5
    expected = np.array([softmax_loop(r) for r in x.reshape(-1, shape[-1])]).reshape(shape)
    assert_close(softmax(x), expected, "softmax vs loop")
    assert_close(softmax(x), torch.softmax(torch.from_numpy(x), -1).numpy(), "softmax vs torch")


def test_softmax_other_axis_and_float32(rng):
    x = rng.standard_normal((4, 6)).astype(np.float32)
    out = softmax(x, axis=0)
    assert out.dtype == np.float32
    assert_close(out, torch.softmax(torch.from_numpy(x), 0).numpy(), "softmax axis=0")


@settings(max_examples=60, deadline=None)
@given(finite_rows, st.floats(0.05, 20.0))
def test_softmax_is_a_distribution_even_for_huge_logits(x, temperature):
    p = softmax(x, temperature=temperature)
    assert np.isfinite(p).all()
    assert (p >= 0).all()
    assert_close(p.sum(-1), np.ones(x.shape[0]), "row sums")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_naive_softmax_overflows_where_stable_does_not(dtype):
    x = np.array([1000.0, 999.0, 0.0], dtype=dtype)
    assert np.isnan(naive_softmax(x)).any()
    assert_close(softmax(x), np.array(softmax_loop([1000.0, 999.0, 0.0])).astype(dtype), "stable")


def test_temperature_limits():
    x = np.array([1.0, 3.0, 2.0])
    cold, hot = softmax(x, temperature=1e-3), softmax(x, temperature=1e6)
    assert_close(cold, np.array([0.0, 1.0, 0.0]), "tau -> 0 is argmax")
    assert_close(hot, np.full(3, 1 / 3), "tau -> inf is uniform", atol=1e-6)
    assert_close(softmax(x, temperature=2.0), np.array(softmax_loop(list(x / 2.0))), "tau = 2")


def test_all_masked_row_gives_zeros_and_lse_minus_inf():
    x = np.array([[-np.inf, -np.inf], [0.0, -np.inf]])
    assert_close(softmax(x), np.array([[0.0, 0.0], [1.0, 0.0]]), "masked softmax")
    lse = logsumexp(x)
    assert lse[0] == -np.inf
    assert lse[1] == 0.0


@settings(max_examples=60, deadline=None)
@given(finite_rows)
def test_logsumexp_matches_torch(x):
    assert_close(logsumexp(x), torch.logsumexp(torch.from_numpy(x), -1).numpy(), "lse")
    assert_close(logsumexp(x, keepdims=True), logsumexp(x)[:, None], "keepdims")


def test_entropy_bounds():
    n = 5
    assert_close(entropy(np.full(n, 1 / n)), np.float64(math.log(n)), "uniform entropy")
    assert entropy(np.eye(n)[0]) == 0.0


@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda: softmax(np.ones(3), temperature=0), ValueError, ["temperature", "0"]),
        (lambda: softmax(np.ones(3), temperature=-1.0), ValueError, ["temperature", "-1.0"]),
        (lambda: softmax(np.ones(3), temperature="hot"), TypeError, ["temperature", "'hot'"]),
        (lambda: softmax(np.arange(3)), TypeError, ["x must have a floating", "int"]),
        (lambda: softmax(np.ones(3), axis=1), ValueError, ["axis", "(3,)"]),
        (lambda: logsumexp([1.0, 2.0]), TypeError, ["x must be", "list"]),
    ],
)
def test_bad_input_names_the_argument(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for w in words:
        assert w in str(info.value)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("row", [[1e308, -1e308, 0.0], [-1e308, 1e308], [-1e308, -1e308, 5.0],
                                 [1.7e308, -1.7e308, 1.7e308]])
def test_huge_finite_logits_give_the_right_result_without_warnings(row, temperature):
    x = np.array(row)
    top = max(row)  # Python floats: an overflowing difference is -inf, exp(-inf) = 0
    expected = softmax_loop([(r - top) / temperature for r in row])
    expected_lse = math.log(math.fsum(math.exp(r - top) for r in row)) + top
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = softmax(x, temperature=temperature)
        lse = logsumexp(x)
    assert_close(out, np.array(expected), f"softmax at temperature {temperature}")
    assert lse == expected_lse
