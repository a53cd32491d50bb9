"""HeadViewer: every head of every layer, or one head up close.

:func:`capture_attention` runs any model built from the course's
:class:`~attn_course.multihead.MultiHeadAttention` (the lecture 05 module alone, or the
lecture 07 model) and collects each attention layer's per-head probabilities, in call
order, through forward hooks; the model's own outputs are unchanged. The widget is a
view over those arrays: pick a layer, then all heads as a grid or one head enlarged.
"""

from __future__ import annotations

import inspect

import ipywidgets as widgets
import numpy as np
import torch

from attn_course.multihead import MultiHeadAttention
from attn_course.widgets.render import figure_to_png, new_figure


@torch.no_grad()
def capture_attention(model: torch.nn.Module, *args, **kwargs) -> list[torch.Tensor]:
    """Run ``model(*args, **kwargs)`` and return each attention layer's probs (B, H, T, S).

    A model whose ``forward`` takes ``need_weights`` (the course's MultiHeadAttention and
    TinyLM) is asked for its maps directly, so every path it takes (RoPE, a KV cache) is
    covered. Any other model is run with forward hooks on each MultiHeadAttention it
    contains; the model's own outputs are unchanged.
    """
    if "need_weights" in inspect.signature(model.forward).parameters:
        _, maps = model(*args, **kwargs, need_weights=True)
        maps = [maps] if isinstance(maps, torch.Tensor) else list(maps)
        return [m.detach().cpu() for m in maps]
    layers = [m for m in model.modules() if isinstance(m, MultiHeadAttention)]
    if not layers:
        raise ValueError(f"model ({type(model).__name__}) contains no MultiHeadAttention layer")
    captured: list[torch.Tensor] = []
    asked: dict[int, bool] = {}

    def before(module, f_args, f_kwargs):
        asked[id(module)] = bool(f_kwargs.get("need_weights", False))
        return f_args, {**f_kwargs, "need_weights": True}

    def after(module, f_args, f_kwargs, output):
        out, probs = output
        captured.append(probs.detach().cpu())
        return out, (probs if asked[id(module)] else None)

    handles = []
    for layer in layers:
        handles.append(layer.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(layer.register_forward_hook(after, with_kwargs=True))
    try:
        model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
    if not captured:
        raise ValueError(
            f"model ({type(model).__name__}) ran without calling any of its "
            f"{len(layers)} MultiHeadAttention layers' forward; give it a "
            f"need_weights argument that returns the attention maps"
        )
    return captured


def _as_layers(probs) -> list[np.ndarray]:
    if isinstance(probs, (np.ndarray, torch.Tensor)):
        probs = list(probs) if probs.ndim == 4 else [probs]
    layers = []
    for i, p in enumerate(probs):
        p = p.detach().float().cpu().numpy() if isinstance(p, torch.Tensor) else np.asarray(p)
        if p.ndim != 3:
            raise ValueError(f"layer {i} must have per-head probabilities (H, T, S), got shape {p.shape}")
        if not np.isfinite(p).all():
            raise ValueError(f"layer {i} has NaN or inf probabilities")
        layers.append(p)
    if not layers:
        raise ValueError("probs is empty: expected at least one layer of shape (H, T, S)")
    return layers


class HeadViewer(widgets.VBox):
    """Attention heads of one input, layer by layer.

    Args:
        probs: (L, H, T, S), or a list of L arrays/tensors of shape (H, T, S).
        tokens: the T query tokens; key_tokens: the S key tokens (default ``tokens``).
    """

    def __init__(self, probs, tokens, key_tokens=None):
        self.layers = _as_layers(probs)
        self.tokens = [str(t) for t in tokens]
        self.key_tokens = self.tokens if key_tokens is None else [str(t) for t in key_tokens]
        for i, p in enumerate(self.layers):
            _, T, S = p.shape
            if (T, S) != (len(self.tokens), len(self.key_tokens)):
                raise ValueError(
                    f"layer {i} has (T, S) = {(T, S)} but there are {len(self.tokens)} tokens "
                    f"and {len(self.key_tokens)} key tokens"
                )
        self.layer = widgets.Dropdown(options=list(range(len(self.layers))), value=0,
                                      description="layer")
        self.head = widgets.Dropdown(description="head")
        self._set_head_options()
        self.image = widgets.Image(format="png")
        self.redraws = 0
        self.layer.observe(self._on_layer, names="value")
        self.head.observe(self._update, names="value")
        super().__init__([widgets.HBox([self.layer, self.head]), self.image])
        self._update()

    @classmethod
    def from_model(cls, model, *inputs, tokens, key_tokens=None, batch_index: int = 0, **kwargs):
        """Run ``model(*inputs, **kwargs)`` and view batch element ``batch_index``."""
        probs = capture_attention(model, *inputs, **kwargs)
        return cls([p[batch_index] for p in probs], tokens, key_tokens)

    def _set_head_options(self) -> None:
        H = self.layers[self.layer.value].shape[0]
        self.head.options = [("all", -1)] + [(str(h), h) for h in range(H)]
        self.head.value = -1

    def _on_layer(self, change) -> None:
        with self.head.hold_trait_notifications():
            self._set_head_options()
        self._update()

    def _update(self, change=None) -> None:
        probs = self.layers[self.layer.value]
        H = probs.shape[0]
        heads = range(H) if self.head.value == -1 else [self.head.value]
        cols = min(4, len(heads))
        rows = -(-len(heads) // cols)
        fig = new_figure(2.4 * cols + 0.6, 2.4 * rows + 0.4)
        axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
        for ax, h in zip(axes, heads, strict=False):
            ax.imshow(probs[h], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {self.layer.value}, head {h}", fontsize=8)
            big = len(heads) == 1
            ax.set_xticks(range(len(self.key_tokens)) if big else [])
            ax.set_yticks(range(len(self.tokens)) if big else [])
            if big:
                ax.set_xticklabels(self.key_tokens, rotation=90, fontsize=7)
                ax.set_yticklabels(self.tokens, fontsize=7)
        for ax in axes[len(heads):]:
            ax.axis("off")
        self.image.value = figure_to_png(fig)
        self.redraws += 1
