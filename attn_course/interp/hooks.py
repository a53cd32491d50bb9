"""Hook points: read or replace any intermediate tensor of the course's attention (lecture 12).

Every :class:`~attn_course.multihead.MultiHeadAttention` owns six identity modules
(:class:`~attn_course.multihead.HookPoint`), named after the module that holds them::

    blocks.1.attn.hook_q        (B, H, T, D)   queries, after RoPE when the model uses it
    blocks.1.attn.hook_k        (B, H, S, D)   keys (cached ones included)
    blocks.1.attn.hook_v        (B, H, S, D)   values
    blocks.1.attn.hook_scores   (B, H, T, S)   scaled, masked scores (-inf where masked)
    blocks.1.attn.hook_probs    (B, H, T, S)   attention probabilities
    blocks.1.attn.hook_z        (B, H, T, D)   each head's output, before out_proj

Models may add their own (the induction model's ``hook_resid_*``). The design follows
TransformerLens (Nanda and Bloom, 2022): a hook is a function ``fn(tensor, name)`` that
returns ``None`` (only reading) or the tensor to use instead (patching, ablation).

:func:`hooks` adds hooks for the length of a ``with`` block and removes them on the way
out, also when the block raises; :func:`run_with_cache` runs a model once and keeps a
copy of every (or every selected) hook point's tensor.

Caveat: a subclass that overrides ``forward`` without calling ``attend`` (the Linformer
module of lecture 10) bypasses the attention hook points.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch
from torch import nn

from attn_course.multihead import HookPoint

__all__ = ["HookFn", "hook_names", "hooks", "run_with_cache"]

HookFn = Callable[[torch.Tensor, str], "torch.Tensor | None"]


def hook_points(model: nn.Module) -> dict[str, HookPoint]:
    """Every hook point of ``model``, by its dotted name."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch nn.Module, got {type(model).__name__}")
    return {name: m for name, m in model.named_modules() if isinstance(m, HookPoint)}


def hook_names(model: nn.Module) -> list[str]:
    """The names of ``model``'s hook points, in module order."""
    return list(hook_points(model))


def _resolve(points: dict[str, HookPoint], name: str) -> HookPoint:
    if name not in points:
        close = [n for n in points if n.endswith(name.split(".")[-1])][:4]
        raise ValueError(
            f"no hook point named {name!r}; expected one of the model's hook points"
            f" (e.g. {close or list(points)[:4]})"
        )
    return points[name]


@contextmanager
def hooks(model: nn.Module, fwd_hooks: Iterable[tuple[str, HookFn]]):
    """Add ``(name, fn)`` hooks to ``model`` inside the ``with`` block; remove them after.

    ``fn(tensor, name)`` returns None to leave the tensor as it is, or a tensor of the
    same shape to use instead. Several hooks on one point run in the order given.
    """
    points = hook_points(model)
    pairs = list(fwd_hooks)
    for item in pairs:
        if not (isinstance(item, tuple) and len(item) == 2 and callable(item[1])):
            raise TypeError(f"fwd_hooks must hold (name, function) pairs, got {item!r}")
    handles = []
    try:
        for name, fn in pairs:
            point = _resolve(points, name)
            handles.append(point.register_forward_hook(_adapter(fn, name)))
        yield model
    finally:
        for h in handles:
            h.remove()


def _adapter(fn: HookFn, name: str):
    def hook(module, inputs, output):
        new = fn(output, name)
        if new is None:
            return None
        if not isinstance(new, torch.Tensor) or new.shape != output.shape:
            raise ValueError(
                f"the hook on {name!r} must return None or a tensor of shape "
                f"{tuple(output.shape)}, got "
                f"{tuple(new.shape) if isinstance(new, torch.Tensor) else type(new).__name__}"
            )
        return new

    return hook


@torch.no_grad()
def run_with_cache(model: nn.Module, *args, names: Iterable[str] | None = None,
                   extra_hooks: Iterable[tuple[str, HookFn]] = (), **kwargs):
    """Run ``model(*args, **kwargs)``; return ``(output, cache)``.

    cache maps each hook point's name (all of them, or those in ``names``) to a detached
    copy of its tensor. ``extra_hooks`` run first (so a patched run can be cached too).
    """
    points = hook_points(model)
    wanted = list(points) if names is None else list(names)
    for name in wanted:
        _resolve(points, name)
    cache: dict[str, torch.Tensor] = {}

    def keep(t: torch.Tensor, name: str):
        cache[name] = t.detach().clone()

    with hooks(model, [*extra_hooks, *((n, keep) for n in wanted)]):
        out = model(*args, **kwargs)
    return out, cache
