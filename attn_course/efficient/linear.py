"""Linear attention: softmax replaced by a kernel, parallel and recurrent forms (lecture 10).

Katharopoulos, Vyas, Pappas and Fleuret, "Transformers are RNNs: Fast Autoregressive
Transformers with Linear Attention" (ICML 2020), equations 4-6 and 16-20.

Softmax attention weighs value j by sim(q_i, k_j) = exp(q_i . k_j / sqrt(D)). Replace
the similarity by a kernel ``phi(q_i) . phi(k_j)`` with a positive feature map phi
(here ``elu(x) + 1``) and the sums can be re-associated:

    out_i = sum_j phi(q_i).phi(k_j) v_j / sum_j phi(q_i).phi(k_j)
          = phi(q_i)^T (sum_j phi(k_j) v_j^T) / phi(q_i)^T (sum_j phi(k_j))
          = phi(q_i)^T KV / phi(q_i)^T z          KV (R, Dv), z (R,)

KV and z do not depend on i, so the cost is O(T R Dv) instead of O(T S D): linear in
the sequence length. With a causal mask the sums run over j <= i only, and they can be
updated one token at a time,

    KV_t = KV_{t-1} + phi(k_t) v_t^T,    z_t = z_{t-1} + phi(k_t),
    out_t = phi(q_t)^T KV_t / (phi(q_t)^T z_t)

which is a recurrent network with a constant-size state (R x Dv plus R): generation
costs the same at every step, however long the prefix.

Three forms are given here and tested equal to each other and to a float64 loop:

- ``linear_attention(..., form="cumsum")``: the parallel form; causal via cumulative
  sums of the outer products phi(k_j) v_j^T, which holds a (T, R, Dv) tensor (practical
  libraries process it chunk by chunk to bound that memory);
- ``linear_attention(..., form="quadratic")``: the same numbers through the masked
  (T, S) matrix phi(Q) phi(K)^T, which shows that linear attention *is* attention with
  another similarity and costs O(T S) again;
- ``linear_attention_recurrent``: a Python loop over :func:`linear_attention_step`.

Caveats. ``eps`` is added to every denominator, as in the paper's code; it changes the
result by a relative amount of about eps / (phi(q).z). The feature map elu + 1 is not
an approximation of the softmax kernel (see ``performer.py`` for one that is): the two
attentions give different outputs, and linear attention's weights are far less peaked
(see the recall experiment in ``recall.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from attn_course.attention import _check_qkv

__all__ = [
    "elu_feature_map",
    "kernel_attention",
    "linear_attention",
    "linear_attention_recurrent",
    "linear_attention_step",
]

FeatureMap = Callable[[torch.Tensor], torch.Tensor]


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1, elementwise: positive everywhere, (..., D) -> (..., D)."""
    return F.elu(x) + 1


def _require_tensors(**tensors) -> None:
    for name, x in tensors.items():
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")


def kernel_attention(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor,
                     causal: bool = False, eps: float = 1e-6, form: str = "cumsum",
                     normalize: bool = True) -> torch.Tensor:
    """Attention with similarity phi_q . phi_k, for features already computed.

    phi_q: (..., T, R), phi_k: (..., S, R), v: (..., S, Dv); leading dimensions
    broadcast. causal: query i sees keys j <= i (needs T == S). form: "cumsum" (linear
    in T) or "quadratic" (the masked (T, S) matrix; same result). normalize=False
    returns the numerator phi(q_i)^T KV alone: the read-out of a plain outer-product
    memory (Schlag et al., "Linear Transformers Are Secretly Fast Weight Programmers",
    2021), for features that may be negative. Returns (..., T, Dv).
    """
    _require_tensors(phi_q=phi_q, phi_k=phi_k, v=v)
    T, S, _, _ = _check_qkv(phi_q, phi_k, v, None, None)
    if form not in ("cumsum", "quadratic"):
        raise ValueError(f"form must be 'cumsum' or 'quadratic', got {form!r}")
    if causal and T != S:
        raise ValueError(
            f"causal linear attention needs as many queries as keys (T == S), got "
            f"phi_q.shape={tuple(phi_q.shape)} and phi_k.shape={tuple(phi_k.shape)}"
        )
    if form == "quadratic":
        sim = phi_q @ phi_k.transpose(-1, -2)  # (..., T, S)
        if causal:
            sim = sim.tril()
        num = sim @ v  # (..., T, Dv)
        den = sim.sum(dim=-1, keepdim=True)  # (..., T, 1)
    elif not causal:
        kv = phi_k.transpose(-1, -2) @ v  # (..., R, Dv)
        z = phi_k.sum(dim=-2, keepdim=True)  # (..., 1, R)
        num = phi_q @ kv  # (..., T, Dv)
        den = (phi_q * z).sum(dim=-1, keepdim=True)  # (..., T, 1)
    else:
        outer = phi_k.unsqueeze(-1) * v.unsqueeze(-2)  # (..., T, R, Dv): phi(k_j) v_j^T
        kv = outer.cumsum(dim=-3)  # (..., T, R, Dv): KV_t = sum_{j<=t} phi(k_j) v_j^T
        z = phi_k.cumsum(dim=-2)  # (..., T, R)
        num = (phi_q.unsqueeze(-2) @ kv).squeeze(-2)  # (..., T, 1, Dv) -> (..., T, Dv)
        den = (phi_q * z).sum(dim=-1, keepdim=True)  # (..., T, 1)
    return num / (den + eps) if normalize else num


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                     feature_map: FeatureMap = elu_feature_map, eps: float = 1e-6,
                     form: str = "cumsum", normalize: bool = True) -> torch.Tensor:
    """Linear attention (parallel form): q (..., T, D), k (..., S, D), v (..., S, Dv).

    Returns (..., T, Dv). causal needs T == S. See :func:`kernel_attention` for
    ``form`` and ``normalize``.
    """
    _require_tensors(q=q, k=k, v=v)
    return kernel_attention(feature_map(q), feature_map(k), v, causal=causal, eps=eps,
                            form=form, normalize=normalize)


def linear_attention_step(kv: torch.Tensor, z: torch.Tensor, q_t: torch.Tensor,
                          k_t: torch.Tensor, v_t: torch.Tensor,
                          feature_map: FeatureMap = elu_feature_map, eps: float = 1e-6):
    """One step of causal linear attention as an RNN.

    kv: (..., R, Dv) and z: (..., R), the state after t-1 tokens (zeros at the start);
    q_t, k_t: (..., D); v_t: (..., Dv). Returns ``(kv, z, out_t)``: the state after
    token t and the output out_t (..., Dv).
    """
    _require_tensors(kv=kv, z=z, q_t=q_t, k_t=k_t, v_t=v_t)
    phi_q, phi_k = feature_map(q_t), feature_map(k_t)  # (..., R) each
    if kv.shape[-2:] != (phi_k.shape[-1], v_t.shape[-1]) or z.shape[-1] != phi_k.shape[-1]:
        raise ValueError(
            f"the state must be kv (..., R, Dv) = (..., {phi_k.shape[-1]}, {v_t.shape[-1]}) and "
            f"z (..., R) = (..., {phi_k.shape[-1]}), got kv.shape={tuple(kv.shape)} and "
            f"z.shape={tuple(z.shape)}"
        )
    kv = kv + phi_k.unsqueeze(-1) * v_t.unsqueeze(-2)  # (..., R, Dv)
    z = z + phi_k  # (..., R)
    num = (phi_q.unsqueeze(-2) @ kv).squeeze(-2)  # (..., 1, Dv) -> (..., Dv)
    den = (phi_q * z).sum(dim=-1, keepdim=True)  # (..., 1)
    return kv, z, num / (den + eps)


def linear_attention_recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               feature_map: FeatureMap = elu_feature_map,
                               eps: float = 1e-6) -> torch.Tensor:
    """Causal linear attention computed token by token with a constant-size state.

    q, k: (..., T, D), v: (..., T, Dv) with equal leading dimensions. Returns
    (..., T, Dv), equal to ``linear_attention(q, k, v, causal=True)``.
    """
    _require_tensors(q=q, k=k, v=v)
    T, S, _, _ = _check_qkv(q, k, v, None, None)
    if T != S:
        raise ValueError(
            f"the recurrent form is causal self-attention and needs T == S, got "
            f"q.shape={tuple(q.shape)} and k.shape={tuple(k.shape)}"
        )
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    R = feature_map(k[..., :1, :]).shape[-1]
    kv = q.new_zeros(*lead, R, v.shape[-1])  # (..., R, Dv)
    z = q.new_zeros(*lead, R)  # (..., R)
    outs = []
    for t in range(T):
        kv, z, out_t = linear_attention_step(kv, z, q[..., t, :], k[..., t, :], v[..., t, :],
                                             feature_map=feature_map, eps=eps)
        outs.append(out_t)
    return torch.stack(outs, dim=-2)  # (..., T, Dv)
