"""Activation patching and head ablation: measure what a component *does* (lecture 12).

Activation patching (Vig et al., 2020, "causal mediation analysis"; Meng et al., 2022;
Wang et al., 2022, the IOI circuit). Run the model on a *clean* input, where it gets
the answer right, and on a *corrupted* one that differs in what matters, keeping the
clean activations. Then rerun the corrupted input with one component's activation
replaced by its clean value. The fraction of the clean-minus-corrupted metric that comes
back is that component's causal effect::

    restored = (metric(patched) - metric(corrupted)) / (metric(clean) - metric(corrupted))

1 means the component alone carries the difference, 0 means it carries none of it
(negative and above-1 values happen: components interact). The usual metric is a
*logit difference*, the logit of the clean answer minus that of the corrupted answer.

Ablation asks a blunter question: replace a head's output by zeros (zero ablation) or by
its average over reference inputs (mean ablation, which keeps the typical bias the
next layers expect) and see how much worse the model gets.

Caveats: results depend on the corruption chosen (patching answers "which components
carry the difference between *these* two inputs"), and one-at-a-time patching misses
components that matter only together (redundant heads).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from attn_course.interp.hooks import hook_points, hooks, run_with_cache

__all__ = [
    "ablate",
    "ablation_hook",
    "logit_diff",
    "patch",
    "patch_hook",
    "patching_sweep",
    "restored_fraction",
]

_HEAD_POINTS = ("hook_q", "hook_k", "hook_v", "hook_scores", "hook_probs", "hook_z")


def _per_head(name: str) -> bool:
    return name.rsplit(".", 1)[-1] in _HEAD_POINTS


def logit_diff(logits: torch.Tensor, good: torch.Tensor, bad: torch.Tensor) -> torch.Tensor:
    """``logits[..., good] - logits[..., bad]``: logits (..., V), good and bad (...) token ids."""
    if not isinstance(logits, torch.Tensor) or logits.ndim < 1:
        raise ValueError(f"logits must be a tensor (..., V), got {type(logits).__name__}")
    good, bad = torch.as_tensor(good), torch.as_tensor(bad)
    if good.shape != logits.shape[:-1] or bad.shape != logits.shape[:-1]:
        raise ValueError(
            f"good and bad must have shape {tuple(logits.shape[:-1])} (logits without V), got "
            f"{tuple(good.shape)} and {tuple(bad.shape)}"
        )
    pick = lambda ids: logits.gather(-1, ids[..., None].long())[..., 0]  # noqa: E731  (...)
    return pick(good) - pick(bad)


def restored_fraction(patched: float, clean: float, corrupted: float) -> float:
    """``(patched - corrupted) / (clean - corrupted)``: 1 = fully restored, 0 = no effect."""
    gap = float(clean) - float(corrupted)
    if gap == 0:
        raise ValueError(f"clean and corrupted metrics are equal ({clean!r}); nothing to restore")
    return (float(patched) - float(corrupted)) / gap


def _index(name: str, head: int | None, pos, batch: int) -> tuple:
    """The index of one head and/or position in a hook point's tensor."""
    rows = slice(None)
    if isinstance(pos, torch.Tensor) and pos.ndim == 1:  # one position per example
        if pos.shape[0] != batch:
            raise ValueError(f"pos as a tensor must have one position per example ({batch}), "
                             f"got shape {tuple(pos.shape)}")
        rows = torch.arange(batch)
    pos = slice(None) if pos is None else pos
    if _per_head(name):  # (B, H, T, ...)
        return (rows, slice(None) if head is None else head, pos)
    if head is not None:
        raise ValueError(f"{name!r} is not split into heads (it is (B, T, E)); pass head=None")
    return (rows, pos)  # (B, T, E)


def patch_hook(source: torch.Tensor, name: str, head: int | None = None, pos=None):
    """A hook that copies ``source`` into the hooked tensor at one head and/or position.

    source: the clean run's tensor at hook point ``name`` (same shape). head: the head to
    patch (None: all). pos: a query position or slice (None: all), or a (B,) tensor with
    one position per example.
    """
    idx = _index(name, head, pos, source.shape[0])

    def hook(t: torch.Tensor, _name: str):
        if t.shape != source.shape:
            raise ValueError(
                f"the clean activation at {name!r} has shape {tuple(source.shape)} but the "
                f"patched run's has {tuple(t.shape)}: clean and corrupted inputs must have "
                f"the same shape"
            )
        t = t.clone()
        t[idx] = source[idx].to(t.dtype)
        return t

    return hook


def patch(model: nn.Module, corrupted: torch.Tensor, clean_cache: dict[str, torch.Tensor],
          name: str, head: int | None = None, pos=None) -> torch.Tensor:
    """Run ``model(corrupted)`` with ``name`` (one head / position) taken from the clean run.

    Returns the patched run's output (logits).
    """
    if name not in clean_cache:
        raise ValueError(f"clean_cache has no {name!r}; run_with_cache the clean input first")
    with torch.no_grad(), hooks(model, [(name, patch_hook(clean_cache[name], name, head, pos))]):
        return model(corrupted)


def ablation_hook(name: str, head: int, mode: str = "zero",
                  reference: torch.Tensor | None = None):
    """A hook that replaces one head's tensor at ``name`` by zeros or by its mean.

    mode "zero": zeros. mode "mean": ``reference`` (the same hook point's tensor on
    reference inputs, (B', H, T, ...)) averaged over its batch, position by position.
    """
    if not _per_head(name):
        raise ValueError(f"ablation works on per-head hook points {_HEAD_POINTS}, got {name!r}")
    if mode not in ("zero", "mean"):
        raise ValueError(f"mode must be 'zero' or 'mean', got {mode!r}")
    if mode == "mean" and reference is None:
        raise ValueError("mode='mean' needs reference activations (from run_with_cache)")
    mean = None if reference is None else reference[:, head].mean(dim=0)  # (T, ...)

    def hook(t: torch.Tensor, _name: str):
        t = t.clone()
        if mode == "zero":
            t[:, head] = 0
        else:
            if mean.shape != t.shape[2:]:
                raise ValueError(
                    f"reference at {name!r} has per-head shape {tuple(mean.shape)}, the run "
                    f"has {tuple(t.shape[2:])}"
                )
            t[:, head] = mean.to(t.dtype)
        return t

    return hook


def ablate(model: nn.Module, inputs: torch.Tensor, name: str, head: int, mode: str = "zero",
           reference: torch.Tensor | None = None) -> torch.Tensor:
    """Run ``model(inputs)`` with one head ablated at ``name``; returns the logits."""
    with torch.no_grad(), hooks(model, [(name, ablation_hook(name, head, mode, reference))]):
        return model(inputs)


def patching_sweep(model: nn.Module, clean: torch.Tensor, corrupted: torch.Tensor,
                   metric: Callable[[torch.Tensor], torch.Tensor], point: str = "hook_z",
                   positions=None) -> torch.Tensor:
    """Restored fraction for every (layer, head), or every (layer, head, position).

    Patches each attention layer's ``point`` (default each head's output), one head at a
    time, from the clean run into the corrupted one. metric: logits -> a scalar tensor.
    positions: None (patch all positions at once; result (L, H)) or an iterable of
    positions (one at a time; result (L, H, len(positions))).
    """
    names = [n for n in hook_points(model) if n.rsplit(".", 1)[-1] == point]
    if not names:
        raise ValueError(f"model has no hook points named *.{point}")
    _, cache = run_with_cache(model, clean, names=names)
    with torch.no_grad():
        m_clean, m_corr = float(metric(model(clean))), float(metric(model(corrupted)))
    pos_list = [None] if positions is None else list(positions)
    H = cache[names[0]].shape[1]
    out = torch.zeros(len(names), H, len(pos_list), dtype=torch.float64)
    for li, name in enumerate(names):
        for h in range(H):
            for pi, p in enumerate(pos_list):
                logits = patch(model, corrupted, cache, name, head=h, pos=p)
                out[li, h, pi] = restored_fraction(float(metric(logits)), m_clean, m_corr)
    return out[..., 0] if positions is None else out
