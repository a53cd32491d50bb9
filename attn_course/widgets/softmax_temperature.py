"""SoftmaxTemperature: how temperature and the key size d_k shape attention weights.

The model, :func:`temperature_state`, draws one query and ``n_keys`` keys with
independent unit-variance entries in d_k dimensions (a fixed seed), takes their dot
products, optionally divides by sqrt(d_k) (Vaswani et al. 2017, section 3.2.1), and
applies softmax at a temperature. Unscaled dot products have standard deviation
sqrt(d_k), so as d_k grows the softmax saturates to one-hot; the 1/sqrt(d_k) scale keeps
it soft at any d_k.
"""

from __future__ import annotations

import math

import ipywidgets as widgets
import numpy as np

from attn_course.softmax import entropy, softmax
from attn_course.validation import require_positive
from attn_course.widgets.render import figure_to_png, new_figure

D_K_CHOICES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


def temperature_state(temperature: float = 1.0, d_k: int = 64, scaled: bool = True,
                      n_keys: int = 8, seed: int = 0) -> dict:
    """Scores, probabilities and summary numbers for one query over ``n_keys`` keys.

    Returns a dict with ``scores`` (n_keys,), ``probs`` (n_keys,), ``entropy`` (nats),
    ``max_entropy`` (log n_keys), ``max_prob`` and ``saturated`` (max_prob > 0.99).
    """
    temperature = require_positive("temperature", temperature)
    for name, val in (("d_k", d_k), ("n_keys", n_keys)):
        if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or val < 1:
            raise ValueError(f"{name} must be a positive integer, got {val!r}")
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(d_k)  # (D,)
    k = rng.standard_normal((n_keys, d_k))  # (S, D)
    scores = k @ q  # (S,)
    if scaled:
        scores = scores / math.sqrt(d_k)
    probs = softmax(scores, temperature=temperature)
    return {
        "scores": scores,
        "probs": probs,
        "entropy": float(entropy(probs)),
        "max_entropy": math.log(n_keys),
        "max_prob": float(probs.max()),
        "saturated": bool(probs.max() > 0.99),
    }


class SoftmaxTemperature(widgets.VBox):
    """Sliders for temperature and d_k, a scale toggle, the distribution drawn."""

    def __init__(self, n_keys: int = 8, seed: int = 0):
        self.n_keys, self.seed = n_keys, seed
        self.temperature = widgets.FloatLogSlider(
            value=1.0, base=10, min=-2, max=2, step=0.05, description="temperature",
            continuous_update=False, readout_format=".3g", style={"description_width": "initial"})
        self.d_k = widgets.SelectionSlider(
            options=D_K_CHOICES, value=64, description="d_k", continuous_update=False,
            style={"description_width": "initial"})
        self.scaled = widgets.Checkbox(value=True, description="divide scores by sqrt(d_k)",
                                       indent=False)
        self.readout = widgets.HTML()
        self.image = widgets.Image(format="png")
        self.state: dict = {}
        self.redraws = 0
        for control in (self.temperature, self.d_k, self.scaled):
            control.observe(self._update, names="value")
        super().__init__([widgets.HBox([self.temperature, self.d_k]), self.scaled,
                          self.readout, self.image])
        self._update()

    def _update(self, change=None) -> None:
        self.state = temperature_state(self.temperature.value, self.d_k.value, self.scaled.value,
                                       n_keys=self.n_keys, seed=self.seed)
        s = self.state
        self.readout.value = (
            f"entropy <b>{s['entropy']:.3f}</b> nats of at most {s['max_entropy']:.3f}; "
            f"largest weight <b>{s['max_prob']:.3f}</b>"
            + (" &mdash; <b>saturated</b> (nearly one-hot)" if s["saturated"] else "")
        )
        fig = new_figure(6.0, 2.6)
        ax1, ax2 = fig.subplots(1, 2)
        keys = np.arange(self.n_keys)
        ax1.bar(keys, s["scores"], color="tab:gray")
        ax1.set(title="scores q.k" + (" / sqrt(d_k)" if self.scaled.value else ""),
                xlabel="key")
        ax2.bar(keys, s["probs"], color="tab:blue")
        ax2.set(title=f"softmax at temperature {self.temperature.value:.3g}",
                xlabel="key", ylim=(0, 1))
        self.image.value = figure_to_png(fig)
        self.redraws += 1
