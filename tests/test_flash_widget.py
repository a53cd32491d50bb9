import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attn_course.flash.io_model import standard_io, tiled_io
from attn_course.testing import assert_close
from attn_course.widgets import TilingStepper, tiling_state

PNG = b"\x89PNG"


@pytest.mark.parametrize("causal", [False, True])
def test_last_step_is_exact_attention(causal):
    s = tiling_state(N=13, d=4, block_q=4, block_k=3, step=1, causal=causal)
    s = tiling_state(N=13, d=4, block_q=4, block_k=3, step=s["n_steps"], causal=causal)
    q, k, v = (torch.from_numpy(s[x]) for x in "qkv")
    assert_close(s["out"], F.scaled_dot_product_attention(q, k, v, is_causal=causal), "out")
    assert s["finished"].all()
    assert (s["reads"], s["writes"]) == tiled_io(13, 4, 4, 3, causal)
    assert (s["standard_reads"], s["standard_writes"]) == standard_io(13, 4)
    assert s["computed"][s["visible"]].all()  # every visible score was computed


@pytest.mark.parametrize(("causal", "step"), [(False, 1), (False, 6), (True, 4), (True, 8)])
def test_running_max_and_sum_cover_exactly_the_computed_tiles(causal, step):
    s = tiling_state(N=12, d=3, block_q=4, block_k=3, step=step, causal=causal)
    scores = s["q"] @ s["k"].T / np.sqrt(3)  # (T, S) computed directly
    seen = s["computed"] & s["visible"]
    rows = seen.any(axis=1)
    masked = np.where(seen, scores, -np.inf)
    m = masked.max(axis=1)
    assert_close(s["m"][rows], m[rows], "running max")
    l = np.exp(masked[rows] - m[rows, None]).sum(axis=1)
    assert_close(s["l"][rows], l, "running sum")
    partial = (np.exp(masked[rows] - m[rows, None]) @ s["v"]) / l[:, None]
    assert_close(s["out"][rows], partial, "partial output")
    assert (s["l"][~rows] == 0).all()
    assert (s["out"][~rows] == 0).all()
    (r0, r1), (c0, c1) = s["rows"], s["cols"]
    assert s["computed"][r0:r1, c0:c1].all()
    assert s["finished"].sum() < 12  # not the last step: some row is still partial


def test_step_out_of_range_is_rejected():
    n = tiling_state(N=8, d=2, block_q=4, block_k=4)["n_steps"]
    assert n == 4
    with pytest.raises(ValueError, match=r"step must be an integer in \[1, 4\]"):
        tiling_state(N=8, d=2, block_q=4, block_k=4, step=5)


def test_widget_redraws_on_step_and_resets_on_causal():
    w = TilingStepper(N=16, d=4, block_q=4, block_k=4)
    first = bytes(w.image.value)
    assert first.startswith(PNG)
    assert w.step.max == 16
    w.step.value = 7
    assert bytes(w.image.value) != first
    assert w.state["tile"] == (1, 2)
    redraws = w.redraws
    w.causal.value = True
    assert w.step.max == 10
    assert w.step.value == 1
    assert w.redraws == redraws + 1  # one redraw for the reset, not two
    w.block_k.value = 8
    assert w.step.max == 6
