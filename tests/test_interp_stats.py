"""Spearman's rho, its bootstrap interval and permutation test, against scipy."""

import importlib.util
import itertools

import numpy as np
import pytest

from attn_course.interp.stats import bootstrap_ci, permutation_pvalue, ranks, spearman

if importlib.util.find_spec("scipy") is None:  # installed with the course's constraints
    pytest.skip("scipy (the reference) is not installed", allow_module_level=True)

from scipy import stats  # noqa: E402


@pytest.mark.parametrize("seed", range(5))
def test_spearman_equals_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, size=30).astype(float)  # many ties
    y = x + rng.normal(size=30)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert np.allclose(ranks(x), stats.rankdata(x) - 1)


def test_constant_sample_gives_nan():
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_bootstrap_interval_by_hand_reference():
    rng = np.random.default_rng(1)
    x = rng.normal(size=25)
    y = 0.6 * x + rng.normal(size=25)
    low, high = bootstrap_ci(x, y, n_boot=500, seed=3)
    # the same resamples, drawn and evaluated with scipy
    idx = np.random.default_rng(3).integers(0, 25, size=(500, 25))
    ref = np.array([stats.spearmanr(x[i], y[i]).statistic for i in idx])
    assert (low, high) == pytest.approx(tuple(np.percentile(ref, [2.5, 97.5])), abs=1e-12)
    assert low < spearman(x, y) < high


def test_bootstrap_interval_narrows_with_more_points():
    rng = np.random.default_rng(2)
    widths = []
    for n in (10, 40, 160):
        x = rng.normal(size=n)
        y = 0.5 * x + rng.normal(size=n)
        low, high = bootstrap_ci(x, y, n_boot=400)
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]


def test_exact_permutation_pvalue_for_four_points():
    x, y = [1, 2, 3, 4], [10, 20, 30, 40]
    # only the identical and the reversed order reach |rho| = 1: 2 of 24
    assert permutation_pvalue(x, y) == pytest.approx(2 / 24)
    values = {round(spearman(x, list(p)), 10) for p in itertools.permutations(y)}
    assert len(values) == 11


def test_random_permutation_pvalue_matches_scipy():
    rng = np.random.default_rng(4)
    x = rng.normal(size=20)
    y = 0.5 * x + rng.normal(size=20)
    ref = stats.permutation_test((y,), lambda yy: stats.spearmanr(x, yy).statistic,
                                 permutation_type="pairings", n_resamples=5000,
                                 random_state=0).pvalue
    assert permutation_pvalue(x, y, n_perm=5000) == pytest.approx(ref, abs=0.03)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="x and y must be 1-D of one length"):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="level must be in"):
        bootstrap_ci([1, 2, 3], [3, 2, 1], level=95)
