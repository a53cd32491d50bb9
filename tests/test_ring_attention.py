"""Ring attention on real gloo process groups (2 and 4 processes) against the course's attention."""

import numpy as np
import psutil
import pytest
import torch

from attn_course.attention import sdpa_torch
from attn_course.distributed import (
    CommStats,
    LaunchError,
    attention_with_lse,
    chunk_pair_kind,
    launch,
    layout_chunks,
    layout_positions,
    merge_partials,
    ring_schedule,
    ring_source,
    shard,
    unshard,
    work_per_step,
)
from attn_course.distributed.workers import (
    fail_worker,
    hang_worker,
    ring_check_worker,
    sum_ranks_worker,
)
from attn_course.testing import assert_close

CASES = [dict(causal=c, layout=l, backward=True) for c in (False, True) for l in ("contiguous", "zigzag")]


def _children():
    """Processes started by ``launch`` from this test process that are still alive."""
    alive = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "attn_course.distributed.launcher" in " ".join(p.cmdline()):
                alive.append(p)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return alive


# ---- pure pieces: no processes ------------------------------------------------------------

def test_schedule_every_process_sees_every_block_once():
    for G in (1, 2, 3, 4, 5):
        sched = ring_schedule(G)
        assert sched.shape == (G, G)
        for r in range(G):
            assert sorted(sched[:, r]) == list(range(G))
            assert sched[0, r] == r  # its own block first
            for s in range(G):
                assert sched[s, r] == ring_source(r, s, G)
        for s in range(1, G):  # what r holds at step s, r - 1 held at step s - 1
            assert all(sched[s, r] == sched[s - 1, (r - 1) % G] for r in range(G))


def test_ring_source_refuses_bad_rank():
    with pytest.raises(ValueError, match="rank must be in 0..1"):
        ring_source(2, 0, 2)


@pytest.mark.parametrize("layout", ["contiguous", "zigzag"])
@pytest.mark.parametrize("G", [1, 2, 4])
def test_layouts_cover_the_sequence_once(layout, G):
    T = 8 * G
    pos = np.concatenate(layout_positions(T, G, layout))
    assert sorted(pos) == list(range(T))
    x = torch.arange(T, dtype=torch.float64).reshape(1, 1, T, 1)
    blocks = [shard(x, r, G, layout) for r in range(G)]
    assert all(b.shape == (1, 1, T // G, 1) for b in blocks)
    assert torch.equal(unshard(blocks, layout), x)


def test_zigzag_holds_one_chunk_from_each_end():
    assert layout_chunks(16, 4, "zigzag")[0] == [(0, 2), (14, 16)]
    assert layout_chunks(16, 4, "zigzag")[3] == [(6, 8), (8, 10)]


@pytest.mark.parametrize(("T", "G", "layout", "parts"), [(10, 4, "contiguous", 4), (12, 4, "zigzag", 8)])
def test_uneven_lengths_are_refused_with_the_numbers(T, G, layout, parts):
    with pytest.raises(ValueError, match=f"T={T} must be divisible by {parts}"):
        layout_chunks(T, G, layout)
    with pytest.raises(ValueError, match="layout must be one of"):
        layout_chunks(8, 2, "striped")


def test_zigzag_balances_causal_work():
    T, G = 64, 4
    contiguous = work_per_step(T, G, "contiguous", causal=True)
    zigzag = work_per_step(T, G, "zigzag", causal=True)
    c = T // G
    # contiguous: at step s process r computes a full block iff s <= r (s = 0 is the diagonal)
    assert contiguous[1:].max() == c * c
    assert contiguous[1:].min() == 0
    assert zigzag[1:].max() == zigzag[1:].min()  # every process, every later step: equal work
    assert zigzag.max(axis=1).sum() < contiguous.max(axis=1).sum()
    assert (work_per_step(T, G, "contiguous", causal=False) == c * c).all()
    assert chunk_pair_kind((0, 4), (4, 8), True) == "skip"
    assert chunk_pair_kind((4, 8), (0, 4), True) == "full"
    assert chunk_pair_kind((4, 8), (4, 8), True) == "diagonal"


def test_merge_of_two_halves_is_attention_over_all_keys(rng):
    q, k, v = (torch.from_numpy(rng.normal(size=(2, 3, 5, 4))) for _ in range(3))
    scale = 0.5
    out_a, lse_a = attention_with_lse(q, k[..., :2, :], v[..., :2, :], scale)
    out_b, lse_b = attention_with_lse(q, k[..., 2:, :], v[..., 2:, :], scale)
    out, lse = merge_partials(out_a, lse_a, out_b, lse_b)
    assert_close(out, sdpa_torch(q, k, v, scale=scale), "merged out")
    assert_close(lse, torch.logsumexp(q @ k.transpose(-1, -2) * scale, -1), "merged lse")
    # an empty partial (lse = -inf) changes nothing, in either order
    empty = (torch.zeros_like(out), torch.full_like(lse, float("-inf")))
    for merged in (merge_partials(out, lse, *empty), merge_partials(*empty, out, lse)):
        assert_close(merged[0], out, "merge with nothing")
    both_empty = merge_partials(*empty, *empty)
    assert torch.isfinite(both_empty[0]).all()
    assert (both_empty[1] == float("-inf")).all()
    with pytest.raises(ValueError, match=r"lse_a \(2, 3, 4\)"):
        merge_partials(out_a, lse_a[..., :4], out_b, lse_b)


def test_pairwise_merge_agrees_with_lecture_09s_flash_decoding(rng):
    from attn_course.flash import merge_partials as flash_merge
    from attn_course.flash import split_partials

    q, k, v = (rng.normal(size=(2, 3, 4, 8)), rng.normal(size=(2, 3, 17, 8)), rng.normal(size=(2, 3, 17, 5)))
    out_parts, lse_parts = split_partials(q, k, v, num_splits=4)  # numpy, lecture 09
    out, lse = torch.from_numpy(out_parts[0]), torch.from_numpy(lse_parts[0])
    for o, l in zip(out_parts[1:], lse_parts[1:], strict=True):  # the ring's order: one block at a time
        out, lse = merge_partials(out, lse, torch.from_numpy(o), torch.from_numpy(l))
    ref_out, ref_lse = flash_merge(out_parts, lse_parts)
    assert_close(out, ref_out, "pairwise merge vs attn_course.flash.merge_partials")
    assert_close(lse, ref_lse, "lse")


def test_ring_attention_needs_a_process_group():
    x = torch.zeros(1, 1, 4, 2)
    from attn_course.distributed import ring_attention_forward

    with pytest.raises(RuntimeError, match="initialised process group"):
        ring_attention_forward(x, x, x)
    with pytest.raises(ValueError, match=r"k.shape=\(1, 1, 3, 2\)"):
        ring_attention_forward(x, x[..., :3, :], x[..., :3, :])


def test_launch_refuses_functions_it_cannot_import():
    def local(rank, world_size):
        return rank

    with pytest.raises(ValueError, match="top level of an importable module"):
        launch(local, 2)
    with pytest.raises(ValueError, match="world_size must be a positive integer, got 0"):
        launch(sum_ranks_worker, 0)
    with pytest.raises(ValueError, match="backend must be one of"):
        launch(sum_ranks_worker, 2, backend="mpi")


# ---- real process groups -------------------------------------------------------------------

@pytest.mark.parametrize("G", [2, 4])
def test_ring_attention_equals_attention_forward_and_backward(G):
    torch.manual_seed(G)
    B, H, T, D = 2, 3, 24, 6  # not powers of two; zigzag: 2G chunks of 6 (G = 2) or 3 (G = 4) tokens
    q, k, v, dout = (torch.randn(B, H, T, D, dtype=torch.float64) for _ in range(4))
    uneven = dict(causal=False, layout="contiguous", backward=False, uneven=True)
    results = launch(ring_check_worker, G, (q, k, v, dout, [*CASES, uneven]), timeout=60)
    assert not _children()
    for r in results:  # process 1 passed one token fewer: every process refused, none hung
        assert "process" in r[-1]["error"]
        assert f"must be divisible by G={G}" in r[-1]["error"]
        assert f"(2, 3, {T // G - 1}, 6)" in r[-1]["error"]
    for i, case in enumerate(CASES):
        qq, kk, vv = (x.clone().requires_grad_() for x in (q, k, v))
        ref = sdpa_torch(qq, kk, vv, causal=case["causal"])
        ref.backward(dout)
        what = f"G={G} causal={case['causal']} {case['layout']}"
        assert_close(unshard([r[i]["out"] for r in results], case["layout"]), ref, f"{what} out")
        scores = (q @ k.transpose(-1, -2)) / D**0.5
        if case["causal"]:
            scores = scores.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
        assert_close(unshard([r[i]["lse"] for r in results], case["layout"], dim=-1),
                     torch.logsumexp(scores, -1), f"{what} lse")
        for name, grad in (("dq", qq.grad), ("dk", kk.grad), ("dv", vv.grad)):
            assert_close(unshard([r[i][name] for r in results], case["layout"]), grad, f"{what} {name}")
        # communication: G - 1 forward transfers of one (k, v) block each, per process
        block = 2 * B * H * (T // G) * D * 8
        for r in results:
            fwd = CommStats([s for s in r[i]["stats"] if s["phase"] == "forward"])
            assert [s["bytes_sent"] for s in fwd.rows] == [block] * (G - 1) + [0]
            bwd = [s["bytes_sent"] for s in r[i]["stats"] if s["phase"] == "backward"]
            assert bwd == [2 * block] * (G - 1) + [block]  # (k, v) and their gradient; last: gradient


def test_a_failing_process_raises_with_its_traceback_and_nothing_is_left():
    with pytest.raises(LaunchError, match="(?s)process 1 of 2 running .*fail_worker failed first.*failed on purpose"):
        launch(fail_worker, 2, (1,), timeout=30)
    assert not _children()


def test_a_hanging_process_is_killed_at_the_timeout():
    import threading

    seen = []  # the check for leftover processes does see them while they run

    def watch():
        for _ in range(200):
            if _children():
                seen.append(True)
                return
            threading.Event().wait(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with pytest.raises(LaunchError, match=r"(?s)did not finish within timeout=4 s; processes \[0\]"):
        launch(hang_worker, 1, timeout=4)  # one process: the cheapest group that can hang
    watcher.join()
    assert seen
    assert not _children()


@pytest.mark.gpu
def test_nccl_ring_on_several_gpus():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA GPUs")
    G = 2
    torch.manual_seed(0)
    q, k, v, dout = (torch.randn(1, 2, 32, 16, dtype=torch.float64) for _ in range(4))
    results = launch(ring_check_worker, G, (q, k, v, dout, CASES), backend="nccl", timeout=120)
    assert results[0][0]["stats"]
    for i, case in enumerate(CASES):
        ref = sdpa_torch(q, k, v, causal=case["causal"])
        assert_close(unshard([r[i]["out"] for r in results], case["layout"]), ref, "nccl out")


# ---- the ring's picture ----------------------------------------------------------------------

def test_ring_state_follows_the_schedule_and_covers_the_mask():
    from attn_course.distributed.ring_widget import ring_state

    for layout in ("contiguous", "zigzag"):
        for causal in (False, True):
            st = ring_state(4, 0, T=16, layout=layout, causal=causal)
            assert st["holds"].tolist() == [0, 1, 2, 3]
            assert st["sends_to"].tolist() == [1, 2, 3, 0]
            # every visible score is computed at exactly one step; skipped ones are invisible
            assert (st["computed_at"][st["visible"]] >= 0).all()
            assert st["work"].tolist() == work_per_step(16, 4, layout, causal)[0].tolist()
    st = ring_state(4, 3, T=16, layout="contiguous", causal=True)
    assert st["holds"].tolist() == [1, 2, 3, 0]
    assert st["work"].tolist() == [0, 0, 0, 16]  # only the last process still has work
    assert ring_state(4, 3, T=16, layout="zigzag", causal=True)["critical_path"] < st["critical_path"]
    with pytest.raises(ValueError, match=r"step must be an integer in \[0, 3\] for world_size=4, got 4"):
        ring_state(4, 4)


def test_ring_widget_redraws_on_step_and_resets_on_layout():
    from attn_course.distributed.ring_widget import RingStepper

    w = RingStepper(world_size=4, T=24)
    first = bytes(w.image.value)
    assert first.startswith(b"\x89PNG")
    w.step.value = 2
    assert bytes(w.image.value) != first
    assert w.state["holds"].tolist() == [2, 3, 0, 1]
    redraws = w.redraws
    w.layout_choice.value = "zigzag"
    assert w.step.value == 0
    assert w.redraws == redraws + 1  # one redraw for the reset, not two
    w.world.value = 3
    assert w.step.max == 2
    assert "critical path" in w.readout.value


def test_committed_benchmark_results_read_and_plot(tmp_path):
    """What lecture 14's benchmark cell does with benchmarks/results/ring_cpu.csv."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from attn_course.distributed.measure import (
        crossover,
        plot_ring,
        predicted_bytes_per_step,
        read_results,
    )

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "ring_cpu.csv"
    if not path.exists():
        pytest.skip("no committed ring benchmark results")
    rows = read_results(path)
    ring = [r for r in rows if r["world_size"] > 1]
    assert {r["world_size"] for r in ring} >= {2, 4}
    for r in ring:  # the bytes counted from the tensors sent match the formula
        assert r["bytes_per_step"] == predicted_bytes_per_step(r["B"], r["H"], r["T"], r["D"], r["world_size"])
        assert r["bytes_per_process"] == (r["world_size"] - 1) * r["bytes_per_step"]
        assert r["compute_min_s"] <= r["compute_median_s"] <= r["compute_max_s"]
    first, ratios = crossover(ring, 4)
    assert [T for T, _ in ratios] == sorted(T for T, _ in ratios)
    assert first is None or any(T == first and x < 1 for T, x in ratios)
    axes = plot_ring(ring, [r for r in rows if r["world_size"] == 1])
    axes[0].figure.savefig(tmp_path / "ring.png")
    plt.close(axes[0].figure)
    assert (tmp_path / "ring.png").stat().st_size > 10_000
