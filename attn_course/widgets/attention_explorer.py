"""AttentionExplorer: pick a query token and see its weights over the keys.

The model, :func:`explorer_state`, takes raw scores (T, S), applies an optional causal
mask and a padding mask (the last keys are padding), and returns the probabilities via
the course's :func:`attn_course.attention.sdpa_numpy` conventions (fully masked rows
are all zero). The widget draws the whole probability matrix with the selected query's
row outlined, and that row's weights as bars with their values written on them.
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np

from attn_course.attention import causal_mask
from attn_course.softmax import softmax
from attn_course.widgets.render import figure_to_png, new_figure


def _check_scores(scores, query_tokens, key_tokens) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a (T, S) matrix, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError(
            f"scores must be finite (use the causal/padding controls to mask), found "
            f"{int((~np.isfinite(scores)).sum())} NaN or inf entries"
        )
    T, S = scores.shape
    if len(query_tokens) != T:
        raise ValueError(f"query_tokens has {len(query_tokens)} tokens but scores has T={T} rows")
    if len(key_tokens) != S:
        raise ValueError(f"key_tokens has {len(key_tokens)} tokens but scores has S={S} columns")
    return scores


def explorer_state(scores, query: int = 0, causal: bool = False, n_padding: int = 0) -> dict:
    """Masked attention probabilities and the selected query's row.

    scores: (T, S) raw scores. query: row index in [0, T). n_padding: how many of the
    last keys are padding (masked for every query). Returns ``keep`` (T, S) bool,
    ``probs`` (T, S) and ``row`` (S,), the weights of the selected query.
    """
    scores = np.asarray(scores, dtype=np.float64)
    T, S = scores.shape
    if not 0 <= query < T:
        raise ValueError(f"query must be in [0, {T}), got {query}")
    if not 0 <= n_padding <= S:
        raise ValueError(f"n_padding must be in [0, {S}], got {n_padding}")
    keep = np.ones((T, S), dtype=bool)
    if causal:
        keep &= causal_mask(T, S)
    if n_padding:
        keep[:, S - n_padding:] = False
    probs = softmax(np.where(keep, scores, -np.inf), axis=-1)
    return {"keep": keep, "probs": probs, "row": probs[query]}


class AttentionExplorer(widgets.VBox):
    """Tokens plus an attention score matrix, explored one query at a time.

    Args:
        tokens: the query tokens (length T); also the keys for self-attention.
        scores: (T, S) raw attention scores (before softmax).
        key_tokens: the S key tokens for cross-attention (default: ``tokens``).
    """

    def __init__(self, tokens, scores, key_tokens=None):
        tokens = [str(t) for t in tokens]
        key_tokens = tokens if key_tokens is None else [str(t) for t in key_tokens]
        self.scores = _check_scores(scores, tokens, key_tokens)
        self.tokens, self.key_tokens = tokens, key_tokens
        T, S = self.scores.shape
        self.query = widgets.ToggleButtons(
            options=[(f"{i}: {t}", i) for i, t in enumerate(tokens)], value=0,
            description="query", style={"button_width": "auto"})
        wide = {"description_width": "initial"}
        self.causal = widgets.Checkbox(value=False, description="causal mask", indent=False)
        self.padding = widgets.IntSlider(value=0, min=0, max=S - 1, description="padding keys",
                                         style=wide)
        self.key = widgets.Dropdown(options=[(f"{j}: {t}", j) for j, t in enumerate(key_tokens)],
                                    value=0, description="key")
        self.readout = widgets.HTML()
        self.image = widgets.Image(format="png")
        self.state: dict = {}
        self.redraws = 0
        for control in (self.query, self.causal, self.padding):
            control.observe(self._update, names="value")
        self.key.observe(self._update_readout, names="value")
        super().__init__([self.query, widgets.HBox([self.causal, self.padding]),
                          widgets.HBox([self.key, self.readout]), self.image])
        self._update()

    def _update_readout(self, change=None) -> None:
        i, j = self.query.value, self.key.value
        masked = not self.state["keep"][i, j]
        self.readout.value = (
            f"weight of <b>{self.tokens[i]}</b> on <b>{self.key_tokens[j]}</b>: "
            f"<b>{self.state['probs'][i, j]:.4f}</b>" + (" (masked)" if masked else "")
        )

    def _update(self, change=None) -> None:
        self.state = explorer_state(self.scores, self.query.value, self.causal.value,
                                    self.padding.value)
        i = self.query.value
        T, S = self.scores.shape
        fig = new_figure(7.0, 3.2)
        ax1, ax2 = fig.subplots(1, 2, width_ratios=[1, 1.3])
        ax1.imshow(self.state["probs"], cmap="Blues", vmin=0, vmax=1)
        ax1.add_patch(_row_outline(i, S))
        ax1.set(xticks=range(S), yticks=range(T), title="attention probabilities")
        ax1.set_xticklabels(self.key_tokens, rotation=90)
        ax1.set_yticklabels(self.tokens)
        bars = ax2.bar(range(S), self.state["row"], color=np.where(
            self.state["keep"][i], "tab:blue", "lightgray"))
        ax2.bar_label(bars, fmt="%.2f", fontsize=7)
        ax2.set(ylim=(0, 1.1), xticks=range(S), title=f"weights of query {i}: {self.tokens[i]!r}")
        ax2.set_xticklabels(self.key_tokens, rotation=90)
        self.image.value = figure_to_png(fig)
        self.redraws += 1
        self._update_readout()


def _row_outline(i: int, S: int):
    from matplotlib.patches import Rectangle

    return Rectangle((-0.5, i - 0.5), S, 1, fill=False, edgecolor="tab:red", linewidth=2)
