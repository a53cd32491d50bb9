import math

import matplotlib
import numpy as np
import pytest

from attn_course.flash.io_model import (
    flash_block_sizes,
    io_bound,
    plot_io_model,
    standard_io,
    tiled_io,
    tiled_io_steps,
)

matplotlib.use("Agg")


def test_standard_io_counts_algorithm_0_by_hand():
    # N=4, d=2: read Q,K (16), write S (16), read S (16), write P (16), read P,V (16+8),
    # write O (8)
    assert standard_io(4, 2) == (16 + 16 + 16 + 8, 16 + 16 + 8)
    r, w = standard_io(1000, 64)
    assert r + w == 4 * 1000**2 + 4 * 1000 * 64


@pytest.mark.parametrize(("N", "d", "bq", "bk", "causal"),
                         [(1, 1, 1, 1, False), (10, 3, 4, 3, False), (10, 3, 4, 3, True),
                          (33, 8, 8, 16, True), (64, 16, 16, 16, True), (7, 2, 100, 100, False)])
def test_closed_form_equals_the_sum_over_tiles(N, d, bq, bk, causal):
    steps = tiled_io_steps(N, d, bq, bk, causal)
    assert steps[-1][2:] == tiled_io(N, d, bq, bk, causal)
    reads = [r for _, _, r, _ in steps]
    assert reads == sorted(reads)  # cumulative


def test_tiled_io_by_hand():
    # N=8, d=2, Br=4, Bc=2, not causal: Q once (16), K and V per query block 2 * (2*16),
    # O and lse once (16 + 8)
    assert tiled_io(8, 2, 4, 2) == (16 + 2 * 2 * 16, 16 + 8)
    # causal: block 0 reads keys 0..3 (8 elements each of K and V), block 1 all 8 keys
    assert tiled_io(8, 2, 4, 2, causal=True) == (16 + 2 * 8 + 2 * 16, 16 + 8)
    # one block holds everything: each input read exactly once
    assert tiled_io(8, 2, 8, 8) == (3 * 16, 16 + 8)


def test_tiled_traffic_scales_like_the_bound():
    """Theorem 2: Theta(N^2 d^2 / M): quadrupling M quarters the traffic (for large N)."""
    N, d = 1 << 14, 64
    totals = []
    for M in (16 * 1024, 64 * 1024, 256 * 1024):
        bq, bk = flash_block_sizes(d, M)
        totals.append(sum(tiled_io(N, d, bq, bk)))
        ratio = totals[-1] / io_bound(N, d, M)
        assert 4 <= ratio <= 12, ratio  # 8 N^2 d^2 / M + lower-order terms
    assert math.isclose(totals[0] / totals[1], 4, rel_tol=0.1)
    assert sum(standard_io(N, d)) > 10 * totals[-1]  # M = 256K elements: far less traffic


def test_block_sizes_follow_the_paper():
    assert flash_block_sizes(64, 100_000) == (math.ceil(100_000 / 256), 64)
    assert flash_block_sizes(64, 64) == (1, 1)
    with pytest.raises(ValueError, match="M must be at least D"):
        flash_block_sizes(64, 32)


def test_bad_arguments():
    with pytest.raises(ValueError, match="T must be a positive integer"):
        standard_io(0, 4)
    with pytest.raises(ValueError, match="block_k must be a positive integer"):
        tiled_io(4, 4, 2, 1.5)


def test_plot_draws_one_line_per_curve():
    ax = plot_io_model(np.array([256, 1024, 4096]), 64, [32 * 1024, 128 * 1024])
    assert len(ax.get_lines()) == 1 + 2 * 2
    matplotlib.pyplot.close(ax.figure)
