"""Circuits of an attention-only model: direct logit attribution, the OV circuit, noising
versus denoising, and path patching (lecture 12).

Elhage et al., "A Mathematical Framework for Transformer Circuits" (Anthropic, 2021):
in a model without MLPs the final residual stream is a sum, the token embedding plus every
head's output (plus the output biases), so the logits split into one term per component,
and each head's effect on what it copies is a product of weight matrices.

- :func:`head_contributions`: each head's output written into the residual stream,
  z_h W_O,h^T (B, H, T, E), from a cache of ``hook_z``.
- :func:`direct_logit_attribution`: the final LayerNorm is linear once its scale 1/sigma
  (one number per position, from the full residual) is frozen, so
  logits = sum_c W_U (gamma * (c - mean c) / sigma) + W_U beta, one term per component c.
  Exact: the terms add up to the model's logits.
- :func:`ov_circuit`: the (V, V) matrix W_U diag(gamma_f) Center W_O,h (W_V,h LN(W_E) + b_V,h):
  column t is the direction in logit space (up to the final LayerNorm's positive scale)
  that the head writes when it attends fully to a token t that sits in the residual
  stream alone, as at layer 0 (later layers see more than the embedding: an
  approximation there). :func:`copying_score` summarises it by its eigenvalues,
  sum(lambda) / sum(|lambda|) (1: the head copies what it attends to).
- :func:`qk_circuit_kcomposition`: the QK circuit of a head whose keys are written by an
  earlier head (K-composition): the (V, V) attention score between a query that holds
  token a and a key that holds what the earlier head writes for token b, at a given
  offset (the model's positions are rotary, so the score depends on it). For an
  induction head fed by a previous-token head, the key's position *follows* b, and the
  head should score a == b highest.
- :func:`noising_sweep`: the other direction of activation patching (Heimersheim and
  Nanda, "How to use and interpret activation patching", 2024): run the *clean* input
  with one component's *corrupted* activation and report the fraction of the
  clean-minus-corrupted metric that is lost. Denoising (``patching_sweep``) asks whether a
  component is enough to restore the behaviour, noising whether it is needed; redundant
  components are each unneeded but may each restore some of it.
- :func:`path_patch`: patch a sender head's clean output into the corrupted run only
  along chosen paths: into the queries, keys or values of chosen receiver heads of a
  later layer, and/or directly into the logits (Wang et al., "Interpretability in the
  Wild", 2022, section 3.1; Goldowsky-Dill et al., 2023). Every other reader of the
  residual stream still sees the sender's corrupted output.

Caveats: written for :class:`~attn_course.interp.model.AttnOnlyLM` (pre-norm blocks, no
MLPs, hook points on every head); path patching changes the receivers' inputs through
the residual stream only (for a sender in layer l and receivers in layer l + 1 that is
every path; with layers in between, their heads keep the corrupted sender).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from attn_course.interp.hooks import hooks, run_with_cache
from attn_course.interp.patching import patching_sweep

__all__ = ["copying_score", "direct_logit_attribution", "head_contributions",
           "noising_sweep", "ov_circuit", "path_patch", "qk_circuit_kcomposition"]


def _layers(model):
    blocks = getattr(model, "blocks", None)
    if blocks is None or not hasattr(model, "ln_f") or not hasattr(model, "head"):
        raise TypeError(f"model must be an attention-only LM with blocks, ln_f and head "
                        f"(AttnOnlyLM), got {type(model).__name__}")
    return blocks


def _head(model, layer: int, head: int):
    blocks = _layers(model)
    if not 0 <= layer < len(blocks):
        raise ValueError(f"layer must be in [0, {len(blocks)}), got {layer!r}")
    attn = blocks[layer].attn
    if not 0 <= head < attn.num_heads:
        raise ValueError(f"head must be in [0, {attn.num_heads}), got {head!r}")
    return attn


def _w_o(attn, head: int) -> torch.Tensor:
    """The head's slice of out_proj: (E, Dh)."""
    d = attn.head_dim
    return attn.out_proj.weight[:, head * d:(head + 1) * d]


def head_contributions(model: nn.Module, cache: dict, layer: int) -> torch.Tensor:
    """(B, H, T, E): each head's output in the residual stream, z_h W_O,h^T (no bias)."""
    attn = _head(model, layer, 0)
    z = cache[f"blocks.{layer}.attn.hook_z"]  # (B, H, T, Dh)
    w = attn.out_proj.weight.reshape(attn.embed_dim, attn.num_heads, attn.head_dim)  # (E, H, Dh)
    return torch.einsum("bhtd,ehd->bhte", z, w)  # (B, H, T, E)


@torch.no_grad()
def direct_logit_attribution(model: nn.Module, idx: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each component's term of the logits, {name: (B, T, V)}; the terms add up exactly.

    Components: "embed", "L{l}H{h}" for every head, "biases" (the attention output
    biases and the final LayerNorm's beta). The final LayerNorm's 1/sigma is taken from
    the full residual of the run on ``idx`` (B, T).
    """
    blocks = _layers(model)
    logits, cache = run_with_cache(model, idx)
    parts = {"embed": cache["hook_embed"]}  # (B, T, E)
    bias = torch.zeros_like(parts["embed"])
    for layer, block in enumerate(blocks):
        contrib = head_contributions(model, cache, layer)  # (B, H, T, E)
        for h in range(contrib.shape[1]):
            parts[f"L{layer}H{h}"] = contrib[:, h]
        if block.attn.out_proj.bias is not None:
            bias = bias + block.attn.out_proj.bias
    resid = sum(parts.values()) + bias  # (B, T, E) the final residual stream
    ln = model.ln_f
    sigma = torch.sqrt(resid.var(-1, unbiased=False, keepdim=True) + ln.eps)  # (B, T, 1)
    gamma = ln.weight if ln.weight is not None else torch.ones_like(resid[0, 0])
    w_u = model.head.weight  # (V, E)

    def through(c):  # the frozen LayerNorm, then the unembedding
        return ((c - c.mean(-1, keepdim=True)) / sigma * gamma) @ w_u.T  # (B, T, V)

    terms = {name: through(c) for name, c in parts.items()}
    beta = ln.bias if ln.bias is not None else torch.zeros_like(gamma)
    terms["biases"] = through(bias.expand_as(resid)) + beta @ w_u.T
    if model.head.bias is not None:
        terms["biases"] = terms["biases"] + model.head.bias
    total = sum(terms.values())
    if not torch.allclose(total, logits, atol=1e-4, rtol=1e-4):  # a guard, not a test
        raise RuntimeError("the attribution does not add up to the logits: the model is "
                           "not the attention-only LM this function decomposes")
    return terms


@torch.no_grad()
def ov_circuit(model: nn.Module, layer: int, head: int) -> torch.Tensor:
    """(V, V): column t is what the head adds to the logits when it attends only to token t.

    W_U diag(gamma_f) Center W_O,h (W_V,h LN_l(W_E[t]) + b_V,h), the final LayerNorm's
    1/sigma left out (a positive scale per position); exact for a token alone in the
    residual stream (layer 0), an approximation for later layers.
    """
    attn = _head(model, layer, head)
    ln = _layers(model)[layer].ln
    d = attn.head_dim
    x = ln(model.tok_emb.weight)  # (V, E) each token, normalised as the layer sees it
    w_v = attn.v_proj.weight[head * d:(head + 1) * d]  # (Dh, E)
    v = x @ w_v.T  # (V, Dh)
    if attn.v_proj.bias is not None:
        v = v + attn.v_proj.bias[head * d:(head + 1) * d]
    out = v @ _w_o(attn, head).T  # (V, E) what the head writes for each attended token
    out = out - out.mean(-1, keepdim=True)  # the final LayerNorm subtracts the mean
    gamma = model.ln_f.weight if model.ln_f.weight is not None else 1.0
    return (out * gamma) @ model.head.weight.T  # (V_attended, V_logit)


@torch.no_grad()
def qk_circuit_kcomposition(model: nn.Module, layer: int, head: int, source: tuple[int, int],
                            offset: int) -> torch.Tensor:
    """(V, V) scores: query token a (row) against a key written by ``source`` for token b.

    The query's residual stream is W_E[a] plus the earlier layers' output biases; the
    key's is what head ``source`` = (layer, head) writes when it attends only to token b,
    W_O (W_V LN(W_E[b]) + b_V), plus the same biases. Both go through this layer's
    LayerNorm, projections and rotary positions, the query ``offset`` >= 0 positions
    after the key; the score is q . k / sqrt(Dh), as in ``hook_scores``. Neither position's
    other contents are included: this is the one path key <- source head <- token b.
    """
    from attn_course.positional import apply_rope

    attn = _head(model, layer, head)
    s_layer, s_head = source
    s_attn = _head(model, s_layer, s_head)
    if s_layer >= layer:
        raise ValueError(f"source must be in an earlier layer than {layer}, got {source!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset < model.max_len:
        raise ValueError(f"offset must be an integer in [0, {model.max_len}), got {offset!r}")
    blocks = _layers(model)
    bias = sum((blocks[i].attn.out_proj.bias for i in range(layer)
                if blocks[i].attn.out_proj.bias is not None), torch.zeros(attn.embed_dim))
    emb = model.tok_emb.weight  # (V, E)
    d = s_attn.head_dim
    v = blocks[s_layer].ln(emb) @ s_attn.v_proj.weight[s_head * d:(s_head + 1) * d].T  # (V, Dh)
    if s_attn.v_proj.bias is not None:
        v = v + s_attn.v_proj.bias[s_head * d:(s_head + 1) * d]
    x_q, x_k = emb + bias, v @ _w_o(s_attn, s_head).T + bias  # (V, E) each
    ln, d = blocks[layer].ln, attn.head_dim
    rows = slice(head * d, (head + 1) * d)
    q = ln(x_q) @ attn.q_proj.weight[rows].T  # (V, Dh)
    k = ln(x_k) @ attn.k_proj.weight[rows].T  # (V, Dh)
    if attn.q_proj.bias is not None:
        q, k = q + attn.q_proj.bias[rows], k + attn.k_proj.bias[rows]
    base = blocks[layer].rope_base
    q = apply_rope(q[:, None, :], [offset], base)[:, 0]  # (V, Dh) at position offset
    k = apply_rope(k[:, None, :], [0], base)[:, 0]  # (V, Dh) at position 0
    return q @ k.T / d**0.5  # (V_query, V_key)


def copying_score(ov: torch.Tensor) -> float:
    """sum(lambda) / sum(|lambda|) over the eigenvalues of a square circuit matrix."""
    if not isinstance(ov, torch.Tensor) or ov.ndim != 2 or ov.shape[0] != ov.shape[1]:
        raise ValueError(f"ov must be a square matrix, got "
                         f"{tuple(ov.shape) if isinstance(ov, torch.Tensor) else type(ov).__name__}")
    ev = torch.linalg.eigvals(ov.double())
    return float(ev.real.sum() / ev.abs().sum())


def noising_sweep(model: nn.Module, clean: torch.Tensor, corrupted: torch.Tensor,
                  metric: Callable[[torch.Tensor], torch.Tensor], point: str = "hook_z",
                  positions=None) -> torch.Tensor:
    """Fraction of the clean-minus-corrupted metric *lost* when each head's activation in
    the clean run is replaced by its corrupted value: (m(clean) - m(noised)) / (m(clean) -
    m(corrupted)). Same arguments and shape (L, H) (or (L, H, T)) as ``patching_sweep``:
    it is that sweep with the two inputs' roles swapped.
    """
    return patching_sweep(model, corrupted, clean, metric, point=point, positions=positions)


@torch.no_grad()
def path_patch(model: nn.Module, clean: torch.Tensor, corrupted: torch.Tensor,
               sender: tuple[int, int], receivers=(), direct: bool = False) -> torch.Tensor:
    """Logits of the corrupted run with the sender head's clean output sent along some paths.

    sender: (layer, head). receivers: (layer, head, "q" | "k" | "v") triples, heads of a
    later layer whose query, key or value input sees the residual stream with the sender's
    corrupted output replaced by its clean one; direct: the same replacement in the final
    residual stream (the path straight to the logits). Everything else runs corrupted.
    Returns logits (B, T, V).
    """
    s_layer, s_head = sender
    _head(model, s_layer, s_head)
    receivers = list(receivers)
    for r in receivers:
        if not (isinstance(r, tuple) and len(r) == 3 and r[2] in ("q", "k", "v")):
            raise ValueError(f"receivers must be (layer, head, 'q' | 'k' | 'v') triples, got {r!r}")
        _head(model, r[0], r[1])
        if r[0] <= s_layer:
            raise ValueError(f"a receiver must be in a later layer than the sender (layer "
                             f"{s_layer}), got {r!r}")
    _, clean_cache = run_with_cache(model, clean, names=[f"blocks.{s_layer}.attn.hook_z"])
    _, bad_cache = run_with_cache(model, corrupted)
    delta = (head_contributions(model, clean_cache, s_layer)[:, s_head]
             - head_contributions(model, bad_cache, s_layer)[:, s_head])  # (B, T, E)

    # Pass A, once per receiver layer: recompute that layer's q, k, v from the residual
    # stream with the sender swapped, and keep them.
    swapped = {}
    for layer in sorted({r[0] for r in receivers}):
        name = f"blocks.{layer}.hook_resid_pre"
        resid = bad_cache[name] + delta  # (B, T, E)
        wanted = [f"blocks.{layer}.attn.hook_{p}" for p in "qkv"]
        _, c = run_with_cache(model, corrupted, names=wanted,
                              extra_hooks=[(name, lambda t, n, resid=resid: resid)])
        swapped.update(c)

    # Pass B: the corrupted run, each receiver head's q, k or v taken from pass A.
    fwd = []
    for layer, head, which in receivers:
        name = f"blocks.{layer}.attn.hook_{which}"

        def replace(t, n, head=head, new=swapped[name]):
            t = t.clone()
            t[:, head] = new[:, head]  # (B, T, Dh) of this head only
            return t

        fwd.append((name, replace))
    handle = None
    if direct:
        handle = model.ln_f.register_forward_pre_hook(lambda m, args: (args[0] + delta,))
    try:
        with hooks(model, fwd):
            return model(corrupted)
    finally:
        if handle is not None:
            handle.remove()
