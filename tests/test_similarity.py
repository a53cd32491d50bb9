import math

import numpy as np
import pytest

from attn_course.data import load_word_vectors
from attn_course.similarity import cosine, dot, nearest, similarity_matrix
from attn_course.testing import assert_close


def loop_dot(a, b):
    return math.fsum(float(x) * float(y) for x, y in zip(a, b, strict=False))


@pytest.mark.parametrize(("n", "m", "d"), [(1, 1, 1), (3, 5, 7), (8, 2, 384)])
def test_similarity_matrix_against_loops(rng, n, m, d):
    x, y = rng.standard_normal((n, d)), rng.standard_normal((m, d))
    expected_dot = np.array([[loop_dot(a, b) for b in y] for a in x])
    norms_x = [math.sqrt(loop_dot(a, a)) for a in x]
    norms_y = [math.sqrt(loop_dot(b, b)) for b in y]
    expected_cos = expected_dot / np.outer(norms_x, norms_y)
    assert_close(similarity_matrix(x, y, "dot"), expected_dot, "dot matrix")
    assert_close(similarity_matrix(x, y, "cosine"), expected_cos, "cosine matrix")
    assert_close(dot(x[0], y[0]), expected_dot[0, 0], "dot")
    assert_close(cosine(x[0], y[0]), expected_cos[0, 0], "cosine")


def test_cosine_ignores_length_dot_does_not(rng):
    a, b = rng.standard_normal(16), rng.standard_normal(16)
    assert_close(cosine(3.0 * a, b), cosine(a, b), "cosine of a scaled vector")
    assert_close(dot(3.0 * a, b), 3.0 * dot(a, b), "dot of a scaled vector")


def test_cosine_of_zero_vector_is_zero():
    assert cosine(np.zeros(4), np.ones(4)) == 0.0


def test_self_similarity_matrix_defaults_to_x(rng):
    x = rng.standard_normal((4, 3))
    sim = similarity_matrix(x, metric="cosine")
    assert_close(np.diag(sim), np.ones(4), "diagonal")
    assert_close(sim, sim.T, "symmetry")


def test_nearest_orders_best_first(rng):
    table = rng.standard_normal((10, 5))
    idx, scores = nearest(table[3], table, k=np.int64(3))
    assert idx[0] == 3
    assert np.all(np.diff(scores) <= 0)
    brute = sorted(range(10), key=lambda j: -cosine(table[3], table[j]))[:3]
    assert list(idx) == brute


def test_word_vectors_are_real_embeddings():
    words, vectors = load_word_vectors()
    assert vectors.shape == (len(words), 384)
    assert len(set(words)) == len(words)
    assert np.isfinite(vectors).all()
    v = dict(zip(words, vectors, strict=False))
    # Related words are closer than unrelated ones: a property random vectors lack.
    assert cosine(v["king"], v["queen"]) > cosine(v["king"], v["banana"]) + 0.2
    assert cosine(v["paris"], v["france"]) > cosine(v["paris"], v["kitten"]) + 0.2
    idx, _ = nearest(v["cat"], vectors, k=2)
    assert words[idx[1]] == "kitten"


@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda: dot(np.ones(3), np.ones(4)), ValueError, ["a.shape=(3,)", "b.shape=(4,)"]),
        (lambda: cosine([1.0, 2.0], np.ones(2)), TypeError, ["a must be", "list"]),
        (lambda: dot(np.ones(3, int), np.ones(3)), TypeError, ["a must have a floating", "int"]),
        (lambda: similarity_matrix(np.ones((2, 3)), metric="l2"), ValueError, ["metric", "'l2'"]),
        (lambda: similarity_matrix(np.ones(3)), ValueError, ["x and y must be 2-D", "(3,)"]),
        (lambda: cosine(np.ones(2), np.ones(2), eps=0), ValueError, ["eps", "0"]),
        (lambda: nearest(np.ones((1, 2)), np.ones((3, 2))), ValueError, ["query", "(1, 2)"]),
        (lambda: nearest(np.ones(2), np.ones((3, 2)), k=0), ValueError, ["k must be", "0"]),
        (lambda: nearest(np.ones(2), np.ones((3, 2)), k=True), ValueError, ["k must be", "True"]),
    ],
)
def test_bad_input_names_the_argument(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    for w in words:
        assert w in str(info.value)
