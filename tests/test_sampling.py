import math

import numpy as np
import pytest
import torch

from attn_course.sampling import sample, sampling_distribution
from attn_course.testing import assert_close
from tests.reference import sampling_distribution_loop

LOGITS = [2.0, 1.0, 1.0, 0.5, -1.0, 3.0, 0.0]

SETTINGS = [
    {"temperature": 1.0}, {"temperature": 0.5}, {"temperature": 2.5}, {"temperature": 0.0},
    {"top_k": 1}, {"top_k": 2}, {"top_k": 3}, {"top_k": 7}, {"top_k": 50},
    {"top_p": 0.1}, {"top_p": 0.5}, {"top_p": 0.9}, {"top_p": 1.0},
    {"temperature": 0.7, "top_k": 4, "top_p": 0.8}, {"temperature": 3.0, "top_p": 0.6},
]


@pytest.mark.parametrize("kw", SETTINGS)
def test_distribution_matches_the_loop_reference(kw):
    rng = np.random.default_rng(0)
    rows = np.vstack([LOGITS, rng.standard_normal((4, 7)) * 3])
    got = sampling_distribution(torch.tensor(rows, dtype=torch.float64), **kw)
    expected = np.array([sampling_distribution_loop(r, **kw) for r in rows])
    assert_close(got, expected, f"sampling distribution {kw}")
    assert_close(got.sum(-1), np.ones(len(rows)), "rows sum to 1")


def test_top_k_keeps_ties_and_top_p_keeps_the_shortest_prefix():
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    p = torch.softmax(logits, -1)
    assert (sampling_distribution(logits, top_k=2) > 0).tolist() == [True, False, False, False, False, True, False]
    assert (sampling_distribution(logits, top_k=3) > 0).sum() == 4  # the two tied 1.0 logits both kept
    for top_p in (0.3, 0.6, 0.75, 0.95):
        kept = sampling_distribution(logits, top_p=top_p) > 0
        mass = p[kept].sum()
        assert mass >= top_p
        assert mass - p[kept].min() < top_p  # dropping the least likely kept token falls short


@pytest.mark.parametrize("kw", [{"temperature": 1.0}, {"temperature": 0.6, "top_k": 3},
                                {"top_p": 0.8}, {"temperature": 2.0, "top_p": 0.95}])
def test_sample_frequencies_match_the_exact_distribution(kw):
    n = 200_000
    logits = torch.tensor(LOGITS).expand(n, -1)  # float32, as a model returns them
    ids = sample(logits, generator=torch.Generator().manual_seed(0), **kw)
    counts = np.bincount(ids.numpy(), minlength=len(LOGITS))
    exact = np.array(sampling_distribution_loop(LOGITS, **kw))
    assert (counts[exact == 0] == 0).all(), (counts, exact)
    freq = counts / n
    sigma = np.sqrt(exact * (1 - exact) / n)
    assert (np.abs(freq - exact) <= 5 * sigma + 1e-12).all(), (freq, exact)
    # chi-square over the kept tokens, far below a 1e-6 tail for <= 7 degrees of freedom
    kept = exact > 0
    chi2 = float((((counts[kept] - n * exact[kept]) ** 2) / (n * exact[kept])).sum())
    assert chi2 < 40, chi2


def test_temperature_zero_is_greedy_and_shapes_are_kept():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 11, generator=g)
    assert torch.equal(sample(logits, temperature=0), logits.argmax(-1))
    ids = sample(logits, top_k=4, generator=g)
    assert ids.shape == (2, 3)
    assert ids.dtype == torch.long
    top4 = logits.topk(4, dim=-1).indices
    assert (top4 == ids[..., None]).any(-1).all()
    assert math.isclose(sampling_distribution(logits, temperature=1e-4)[0, 0].max().item(), 1.0)


@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda: sample([1.0, 2.0]), TypeError, ["logits", "list"]),
        (lambda: sample(torch.tensor([1, 2])), TypeError, ["logits", "int64"]),
        (lambda: sample(torch.ones(3), temperature=-1), ValueError, ["temperature", "-1"]),
        (lambda: sample(torch.ones(3), top_k=0), ValueError, ["top_k", "0"]),
        (lambda: sample(torch.ones(3), top_p=0.0), ValueError, ["top_p", "(0, 1]", "0.0"]),
        (lambda: sample(torch.ones(3), top_p=1.5), ValueError, ["top_p", "1.5"]),
    ],
)
def test_bad_input_names_the_argument(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for w in words:
        assert w in str(info.value), str(info.value)
