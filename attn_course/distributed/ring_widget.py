"""RingStepper: step through ring attention and see which block each process holds.

The model, :func:`ring_state`, is pure bookkeeping (no processes): at step s, process r
holds the key-value block that started on process ``(r - s) mod G``
(:func:`~attn_course.distributed.schedule.ring_source`); it returns that, the token
chunks of every block in the chosen layout, which query-key scores are computed at this
step and before, and the work of each process at this step. :class:`RingStepper` is a
thin view: a step slider, a layout choice and a causal toggle that redraw the ring, the
T x T score matrix coloured by the process computing each entry, and the work per
process.

Liu et al., "Ring Attention with Blockwise Transformers" (2023); zigzag layout as in
:mod:`attn_course.distributed.schedule`. Caveat: work counts computed chunk pairs (a
diagonal chunk pair counts whole), as the ring's implementation computes them.
"""

from __future__ import annotations

import math

import ipywidgets as widgets
import numpy as np

from attn_course.distributed.schedule import (
    LAYOUTS,
    chunk_pair_kind,
    layout_chunks,
    ring_schedule,
    work_per_step,
)
from attn_course.widgets.render import figure_to_png, new_figure

__all__ = ["RingStepper", "draw_ring", "ring_state"]


def ring_state(world_size: int, step: int, T: int = 16, layout: str = "contiguous",
               causal: bool = False) -> dict:
    """The ring at ``step`` (0 <= step < G).

    Returns a dict: ``holds`` (G,) the block each process holds; ``sends_to`` (G,) the
    process it passes that block to; ``chunks`` the token ranges of each process's block;
    ``owner`` (T,) the process holding each query token; ``computed_at`` (T, T) int, the
    step at which each query-key score is computed (-1: never, masked away or skipped;
    ``visible`` (T, T) the causal mask); ``work`` (G,) scores computed at this step by
    each process, ``total_work`` (G,) over the whole ring, ``max_step_work`` the most any
    process computes in one step, and ``critical_path``, the sum over the steps of the
    busiest process's work (the steps wait for each other).
    """
    chunks = layout_chunks(T, world_size, layout)
    G = len(chunks)
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step < G:
        raise ValueError(f"step must be an integer in [0, {G - 1}] for world_size={G}, got {step!r}")
    sched = ring_schedule(G)  # (G steps, G processes)
    owner = np.empty(T, dtype=np.int64)
    for r, cs in enumerate(chunks):
        for a, b in cs:
            owner[a:b] = r
    computed_at = np.full((T, T), -1, dtype=np.int64)
    for s in range(G):
        for r in range(G):
            for qa, qb in chunks[r]:
                for ka, kb in chunks[sched[s, r]]:
                    if chunk_pair_kind((qa, qb), (ka, kb), causal) != "skip":
                        computed_at[qa:qb, ka:kb] = s
    visible = np.tril(np.ones((T, T), dtype=bool)) if causal else np.ones((T, T), dtype=bool)
    work = work_per_step(T, G, layout, causal)
    return dict(world_size=G, step=step, T=T, layout=layout, causal=causal,
                holds=sched[step].copy(), sends_to=(np.arange(G) + 1) % G, chunks=chunks,
                owner=owner, computed_at=computed_at, visible=visible, work=work[step],
                total_work=work.sum(axis=0), max_step_work=int(work.max()),
                critical_path=int(work.max(axis=1).sum()))


def draw_ring(state: dict, fig=None):
    """Draw :func:`ring_state`'s result on a matplotlib figure (new if None); returns it."""
    from matplotlib.patches import FancyArrowPatch

    fig = new_figure(10.5, 3.4) if fig is None else fig
    ax_ring, ax_s, ax_w = fig.subplots(1, 3, width_ratios=[1.1, 1.0, 0.8])
    G, s = state["world_size"], state["step"]
    colors = [f"C{r}" for r in range(G)]
    angles = [math.pi / 2 - 2 * math.pi * r / G for r in range(G)]
    xy = [(math.cos(a), math.sin(a)) for a in angles]
    for r in range(G):
        src = state["holds"][r]
        ax_ring.scatter(*xy[r], s=1400, color=colors[r], alpha=0.25, zorder=1)
        ax_ring.text(*xy[r], f"P{r}\nQ{r}, KV{src}", ha="center", va="center", fontsize=8,
                     zorder=3)
        nxt = xy[(r + 1) % G]
        if G > 1 and s < G - 1:
            ax_ring.add_patch(FancyArrowPatch(xy[r], nxt, connectionstyle="arc3,rad=-0.25",
                                              arrowstyle="-|>", mutation_scale=12, lw=1.2,
                                              shrinkA=22, shrinkB=22, color=colors[src]))
    ax_ring.set(xlim=(-1.6, 1.6), ylim=(-1.6, 1.6), aspect="equal",
                title=f"step {s}: P r holds KV of P(r-{s})" + ("; sends it on" if s < G - 1 else ""))
    ax_ring.axis("off")
    T = state["T"]
    img = np.ones((T, T, 4))  # white: never computed
    for r in range(G):
        rgba = np.array(__import__("matplotlib").colors.to_rgba(colors[r]))
        rows = state["owner"] == r
        done = (state["computed_at"] >= 0) & (state["computed_at"] < s) & rows[:, None]
        now = (state["computed_at"] == s) & rows[:, None]
        img[done] = rgba * [1, 1, 1, 0] + [0, 0, 0, 0.3]
        img[now] = rgba
    img[~state["visible"] & (state["computed_at"] >= 0) & (state["computed_at"] <= s)] *= [1, 1, 1, 0.5]
    ax_s.imshow(img, interpolation="nearest")
    ax_s.set(title="scores: this step (solid), before (faded)", xlabel="key position",
             ylabel="query position")
    ax_w.bar(range(G), state["work"], color=colors)
    ax_w.set(title=f"scores computed at step {s}", xlabel="process", xticks=range(G),
             ylim=(0, 1.1 * max(1, state["max_step_work"])))
    return fig


class RingStepper(widgets.VBox):
    """A step slider, a layout choice, a causal toggle and G over :func:`ring_state`."""

    def __init__(self, world_size: int = 4, T: int = 24, layout: str = "contiguous",
                 causal: bool = True):
        self.T = T
        style = {"description_width": "initial"}
        self.world = widgets.Dropdown(options=[2, 3, 4], value=world_size, description="G",
                                      style=style)
        self.layout_choice = widgets.Dropdown(options=list(LAYOUTS), value=layout, description="layout",
                                       style=style)
        self.causal = widgets.Checkbox(value=causal, description="causal", indent=False)
        self.step = widgets.IntSlider(value=0, min=0, max=world_size - 1, description="step",
                                      continuous_update=False, style=style)
        self.readout = widgets.HTML()
        self.image = widgets.Image(format="png")
        self.state: dict = {}
        self.redraws = 0
        for control in (self.world, self.layout_choice, self.causal):
            control.observe(self._reset, names="value")
        self.step.observe(self._update, names="value")
        super().__init__([widgets.HBox([self.world, self.layout_choice, self.causal]), self.step,
                          self.readout, self.image])
        self._reset()

    def _reset(self, change=None) -> None:
        self.step.unobserve(self._update, names="value")  # one redraw, not two
        self.step.value = 0
        self.step.max = self.world.value - 1
        self.step.observe(self._update, names="value")
        self._update()

    def _update(self, change=None) -> None:
        self.state = st = ring_state(self.world.value, self.step.value, self.T,
                                     self.layout_choice.value, self.causal.value)
        self.readout.value = (
            f"step {st['step']} of {st['world_size'] - 1}: scores computed per process "
            f"{st['work'].tolist()}; whole ring per process {st['total_work'].tolist()}; "
            f"critical path (sum over steps of the busiest process) <b>{st['critical_path']}</b>")
        self.image.value = figure_to_png(draw_ring(st))
        self.redraws += 1
