"""TilingStepper: step through FlashAttention's tiles and watch the state it keeps.

The model, :func:`tiling_state`, runs the numpy tiled forward pass of
``attn_course.flash.tiled`` on one head (a fixed seed) and stops after a given number of
tiles. It returns which tiles of the score matrix S have been computed, the current
tile, each row's running max m and running sum l, the partial output acc / l of every
row started so far, and the HBM reads and writes so far (``attn_course.flash.io_model``)
next to the total of standard attention, which must write and read all of S and P.

Dao et al., "FlashAttention" (2022), Algorithm 1, in the FlashAttention-2 loop order:
query blocks outer, key blocks inner. Caveat: the traffic counts elements of one head
and assume Q_i, m, l and acc stay on chip for the whole row of tiles.
"""

from __future__ import annotations

import ipywidgets as widgets
import matplotlib
import numpy as np

from attn_course.flash.io_model import standard_io, tiled_io_steps
from attn_course.flash.tiled import flash_forward
from attn_course.widgets.render import figure_to_png, new_figure


class _Stop(Exception):
    """Raised by the callback to end the forward pass after the requested tile."""


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def tiling_state(N: int = 16, d: int = 8, block_q: int = 4, block_k: int = 4,
                 step: int = 1, causal: bool = False, seed: int = 0) -> dict:
    """The tiled forward pass after ``step`` tiles (1 <= step <= n_steps).

    Draws q, k, v of shape (N, d) from ``seed``. Returns a dict with ``n_steps``;
    ``tile`` (i, j) and its ``rows`` (i0, i1) and ``cols`` (j0, j1); ``computed`` (N, N)
    bool, the entries of S computed so far; ``visible`` (N, N) bool, the entries the
    mask lets through; ``m`` and ``l`` (N,) running max and sum (-inf and 0 where a row
    has not started); ``out`` (N, d) the partial output acc / l (zero where not
    started); ``finished`` (N,) bool, rows whose output is final; ``reads`` and
    ``writes`` so far and ``standard_reads`` and ``standard_writes`` in total (elements);
    ``q``, ``k``, ``v``.
    """
    N, d = _positive_int("N", N), _positive_int("d", d)
    block_q, block_k = _positive_int("block_q", block_q), _positive_int("block_k", block_k)
    steps = tiled_io_steps(N, d, block_q, block_k, causal)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) \
            or not 1 <= step <= len(steps):
        raise ValueError(f"step must be an integer in [1, {len(steps)}] for N={N}, "
                         f"block_q={block_q}, block_k={block_k}, causal={causal}; got {step!r}")
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((N, d)) for _ in range(3))  # (T, D) each, one head
    m = np.full(N, -np.inf)  # (T,)
    l = np.zeros(N)  # (T,)
    acc = np.zeros((N, d))  # (T, D)
    computed = np.zeros((N, N), dtype=bool)  # (T, S)
    last = {}
    count = 0

    def record(i0, i1, j0, j1, m_blk, l_blk, acc_blk):
        nonlocal count
        count += 1
        m[i0:i1], l[i0:i1], acc[i0:i1] = m_blk, l_blk, acc_blk
        computed[i0:i1, j0:j1] = True
        last.update(rows=(i0, i1), cols=(j0, j1))
        if count == step:
            raise _Stop

    try:
        flash_forward(q, k, v, causal=causal, block_q=block_q, block_k=block_k,
                      callback=record)
    except _Stop:
        pass
    i, j, reads, writes = steps[step - 1]
    started = l > 0
    out = np.zeros_like(acc)
    out[started] = acc[started] / l[started, None]
    visible = np.tril(np.ones((N, N), dtype=bool)) if causal else np.ones((N, N), dtype=bool)
    finished = np.zeros(N, dtype=bool)
    finished[:last["rows"][0]] = True  # every row block before the current one is done
    if last["cols"][1] >= (min(N, last["rows"][1]) if causal else N):
        finished[last["rows"][0]:last["rows"][1]] = True
    std_reads, std_writes = standard_io(N, d)
    return {
        "n_steps": len(steps), "tile": (i, j), "rows": last["rows"], "cols": last["cols"],
        "computed": computed, "visible": visible, "m": m, "l": l, "out": out,
        "finished": finished, "reads": reads, "writes": writes,
        "standard_reads": std_reads, "standard_writes": std_writes, "q": q, "k": k, "v": v,
    }


class TilingStepper(widgets.VBox):
    """A tile-step slider, block-size choices and a causal toggle over :func:`tiling_state`."""

    def __init__(self, N: int = 32, d: int = 8, block_q: int = 8, block_k: int = 8,
                 causal: bool = False, seed: int = 0):
        self.N, self.d, self.seed = N, d, seed
        style = {"description_width": "initial"}
        sizes = [b for b in (2, 4, 8, 16) if b <= N]
        self.block_q = widgets.Dropdown(options=sizes, value=block_q, style=style,
                                        description="query block Br")
        self.block_k = widgets.Dropdown(options=sizes, value=block_k, style=style,
                                        description="key block Bc")
        self.causal = widgets.Checkbox(value=causal, description="causal", indent=False)
        self.step = widgets.IntSlider(value=1, min=1, max=1, description="tile step",
                                      continuous_update=False, style=style)
        self.readout = widgets.HTML()
        self.image = widgets.Image(format="png")
        self.state: dict = {}
        self.redraws = 0
        for control in (self.block_q, self.block_k, self.causal):
            control.observe(self._reset, names="value")
        self.step.observe(self._update, names="value")
        super().__init__([widgets.HBox([self.block_q, self.block_k, self.causal]), self.step,
                          self.readout, self.image])
        self._reset()

    def _reset(self, change=None) -> None:
        """New block sizes or mask: a new number of steps; start again from step 1."""
        n_steps = tiling_state(self.N, self.d, self.block_q.value, self.block_k.value, 1,
                               self.causal.value, self.seed)["n_steps"]
        self.step.unobserve(self._update, names="value")  # one redraw, not two
        self.step.value = 1
        self.step.max = n_steps
        self.step.observe(self._update, names="value")
        self._update()

    def _update(self, change=None) -> None:
        self.state = s = tiling_state(self.N, self.d, self.block_q.value, self.block_k.value,
                                      self.step.value, self.causal.value, self.seed)
        i, j = s["tile"]
        self.readout.value = (
            f"tile (i={i}, j={j}) of {s['n_steps']}: rows {s['rows'][0]}..{s['rows'][1] - 1}, "
            f"keys {s['cols'][0]}..{s['cols'][1] - 1}; HBM traffic so far "
            f"<b>{s['reads'] + s['writes']}</b> elements, standard attention "
            f"<b>{s['standard_reads'] + s['standard_writes']}</b>")
        fig = new_figure(9.5, 2.8)
        ax_s, ax_ml, ax_o, ax_io = fig.subplots(1, 4, width_ratios=[1.1, 1.1, 0.8, 0.7])
        # 1. the score matrix: masked (white), computed (blue), current tile (orange)
        img = np.where(s["visible"], 0.15, 0.0) + np.where(s["computed"], 0.45, 0.0)
        (r0, r1), (c0, c1) = s["rows"], s["cols"]
        img[r0:r1, c0:c1] = 1.0
        ax_s.imshow(img, cmap="Blues", vmin=0, vmax=1.2)
        ax_s.add_patch(_rect(c0, r0, c1 - c0, r1 - r0))
        ax_s.set(title="tiles of S", xlabel="key", ylabel="query")
        # 2. running max and sum per row
        rows = np.arange(self.N)
        started = s["l"] > 0
        ax_ml.plot(np.where(started, s["m"], np.nan), rows, "o-", ms=3, label="m (max)")
        ax_ml.plot(np.where(started, np.log(np.where(started, s["l"], 1)), np.nan), rows,
                   "s-", ms=3, label="log l (sum)")
        ax_ml.axhspan(r0 - 0.5, r1 - 0.5, color="tab:orange", alpha=0.2)
        ax_ml.set(title="running m, log l", ylim=(self.N - 0.5, -0.5))
        ax_ml.legend(fontsize=7, loc="lower right")
        # 3. partial output of every started row (final rows marked on the right)
        rgba = matplotlib.colormaps["RdBu"]((s["out"] + 1.5) / 3.0)  # (T, D, 4)
        rgba[~s["finished"], :, 3] = 0.35  # rows still waiting for key blocks: faded
        ax_o.imshow(rgba, aspect="auto")
        ax_o.set(title="output (faded: partial)", xlabel="feature", yticks=[])
        # 4. HBM traffic so far against standard attention's total
        ax_io.bar([0, 1], [s["reads"], s["standard_reads"]], color="tab:blue", label="reads")
        ax_io.bar([0, 1], [s["writes"], s["standard_writes"]],
                  bottom=[s["reads"], s["standard_reads"]], color="tab:red", label="writes")
        ax_io.set_xticks([0, 1], ["tiled\nso far", "standard\ntotal"])
        ax_io.set(title="HBM elements")
        ax_io.legend(fontsize=7)
        self.image.value = figure_to_png(fig)
        self.redraws += 1


def _rect(x0, y0, w, h):
    from matplotlib.patches import Rectangle

    return Rectangle((x0 - 0.5, y0 - 0.5), w, h, fill=False, ec="tab:orange", lw=2)
