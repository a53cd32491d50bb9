import numpy as np
import pytest
import torch

from attn_course.testing import assert_close, assert_error_within, tolerances


def test_assert_close_prints_errors_when_passing(capsys):
    assert_close(np.array([1.0, 2.0]), np.array([1.0, 2.0 + 1e-12]), "x")
    out = capsys.readouterr().out
    assert "x: max abs error" in out
    assert "mean abs error" in out


def test_assert_close_fails_with_max_mean_and_index():
    with pytest.raises(AssertionError) as info:
        assert_close(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.5, 3.0]), "probs")
    msg = str(info.value)
    assert "probs: max abs error 5.000e-01" in msg
    assert "mean abs error 1.667e-01" in msg
    assert "index (1,)" in msg


def test_assert_close_rejects_nan_and_shape_mismatch():
    with pytest.raises(AssertionError, match="NaN"):
        assert_close(np.array([np.nan]), np.array([0.0]), "nan")
    with pytest.raises(AssertionError, match="shape"):
        assert_close(np.ones(3), np.ones(4), "shape")


def test_tolerances_follow_the_actual_dtype():
    x = torch.ones(3, dtype=torch.float16)
    assert_close(x, torch.full((3,), 1.001, dtype=torch.float64), "fp16 within its tolerance")
    with pytest.raises(AssertionError):
        assert_close(x.double(), torch.full((3,), 1.001, dtype=torch.float64), "fp64 is stricter")
    assert tolerances(torch.bfloat16) > tolerances("float16") > tolerances(np.float32)
    with pytest.raises(ValueError, match="int32"):
        tolerances(np.int32)


def test_assert_error_within():
    exact = np.zeros(4)
    assert_error_within(np.full(4, 0.03), np.full(4, 0.02), exact, "ok", floor=0.0)
    with pytest.raises(AssertionError, match="max error 5.000e-02 vs the reference's 2.000e-02"):
        assert_error_within(np.full(4, 0.05), np.full(4, 0.02), exact, "too far", floor=0.0)
