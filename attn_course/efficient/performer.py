"""Performer / FAVOR+: softmax attention estimated with positive random features (lecture 10).

Choromanski et al., "Rethinking Attention with Performers" (ICLR 2021), section 2.3
(positive random features, lemma 1) and 2.4 (orthogonal random features).

The softmax kernel is an expectation over Gaussian vectors w ~ N(0, I_D):

    exp(x . y) = E_w[ exp(w.x - |x|^2/2) exp(w.y - |y|^2/2) ]

so with R samples w_1..w_M stacked in W (R, D) and the feature map

    phi(x) = exp(W x - |x|^2 / 2) / sqrt(R)          (..., D) -> (..., R), all > 0

phi(x) . phi(y) is an unbiased estimate of exp(x . y) (tested over many draws of W).
Plugging phi into linear attention (``linear.kernel_attention``) estimates softmax
attention in O(T R D) time: q and k are first multiplied by scale**0.5 each so that
x . y = q . k * scale.

Orthogonal features: W's rows are drawn in blocks of D mutually orthogonal directions
(QR of a Gaussian matrix, signs fixed so that the directions are uniform), each scaled
by the length of an independent Gaussian vector. Every row is still exactly N(0, I_D),
so the estimate stays unbiased, while the orthogonality lowers its variance.

Caveats. The estimate of each *weight* is unbiased, but the attention output is a ratio
of two estimates and so is slightly biased; its error shrinks like 1/sqrt(R) (measured
in the benchmark and the notebook). The variance grows like exp(|x|^2 + |y|^2): large
scores (sharp attention, long vectors) need many features. For stability the features
are computed with a maximum subtracted inside the exponential: per query row for
phi(q), and one maximum over all keys for phi(k). Both cancel in the ratio (up to the
``eps`` added to the denominator), but the key maximum is taken over every position,
so with ``causal=True`` a query's features see the future through that one constant.
"""

from __future__ import annotations

import math

import torch

from attn_course.efficient.linear import kernel_attention

__all__ = [
    "orthogonal_random_features",
    "performer_attention",
    "positive_random_features",
    "softmax_kernel_estimate",
]


def orthogonal_random_features(num_features: int, dim: int,
                               generator: torch.Generator | None = None,
                               dtype: torch.dtype = torch.float32,
                               device: torch.device | str | None = None,
                               orthogonal: bool = True) -> torch.Tensor:
    """W (R, D): R = num_features rows, each distributed N(0, I_D).

    With ``orthogonal`` (the default) rows come in blocks of D mutually orthogonal
    vectors; otherwise they are independent (plain random features, for comparison).
    """
    for name, val in (("num_features", num_features), ("dim", dim)):
        if isinstance(val, bool) or not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive integer, got {val!r}")
    kw = {"generator": generator, "dtype": torch.float64, "device": device}
    if not orthogonal:
        return torch.randn(num_features, dim, **kw).to(dtype)
    n_blocks = -(-num_features // dim)
    G = torch.randn(n_blocks, dim, dim, **kw)  # (blocks, D, D)
    Q, R = torch.linalg.qr(G)  # Q (blocks, D, D) orthogonal, one QR per block at once
    Q = Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))[:, None, :]  # Haar, not QR's bias
    directions = Q.transpose(-1, -2).reshape(n_blocks * dim, dim)  # (blocks * D, D): unit rows
    directions = directions[:num_features]  # (R, D)
    lengths = torch.randn(num_features, dim, **kw).norm(dim=-1, keepdim=True)  # (R, 1), chi_D
    return (lengths * directions).to(dtype)  # (R, D)


def positive_random_features(x: torch.Tensor, W: torch.Tensor,
                             stabilizer: str | None = None) -> torch.Tensor:
    """phi(x) = exp(W x - |x|^2 / 2) / sqrt(R): x (..., T, D), W (R, D) -> (..., T, R).

    W may also be a stack (..., R, D) of independent draws that broadcasts against x.

    stabilizer: None (exact formula), "row" (subtract each row's maximum exponent; for
    queries) or "all" (one maximum over the last two axes; for keys). A stabilizer
    multiplies phi by a constant that cancels in attention's ratio.
    """
    for name, t in (("x", x), ("W", W)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(t).__name__}")
    if W.ndim < 2 or x.shape[-1] != W.shape[-1]:
        raise ValueError(
            f"W must have shape (R, D) with D = x.shape[-1] = {x.shape[-1]}, got "
            f"W.shape={tuple(W.shape)}"
        )
    if stabilizer not in (None, "row", "all"):
        raise ValueError(f"stabilizer must be None, 'row' or 'all', got {stabilizer!r}")
    logits = x @ W.to(x.dtype).transpose(-1, -2) - 0.5 * (x * x).sum(dim=-1, keepdim=True)  # (..., T, R)
    if stabilizer == "row":
        logits = logits - logits.amax(dim=-1, keepdim=True).detach()
    elif stabilizer == "all":
        logits = logits - logits.amax(dim=(-2, -1), keepdim=True).detach()
    return torch.exp(logits) / math.sqrt(W.shape[-2])  # (..., T, R)


def softmax_kernel_estimate(x: torch.Tensor, y: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """phi(x) phi(y)^T, the estimate of exp(x y^T): x (..., T, D), y (..., S, D) -> (..., T, S).

    W: (R, D), or (..., R, D) for a stack of independent estimates."""
    return positive_random_features(x, W) @ positive_random_features(y, W).transpose(-1, -2)


def performer_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        num_features: int | None = None, W: torch.Tensor | None = None,
                        causal: bool = False, scale: float | None = None,
                        generator: torch.Generator | None = None,
                        eps: float = 1e-6) -> torch.Tensor:
    """FAVOR+ estimate of softmax attention.

    q: (..., T, D), k: (..., S, D), v: (..., S, Dv). Give either ``W`` (R, D) or
    ``num_features`` R (then W is drawn with ``generator``). scale: 1/sqrt(D) by
    default. causal needs T == S. Returns (..., T, Dv).
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(t).__name__}")
    D = q.shape[-1]
    if W is None:
        if num_features is None:
            raise ValueError("give num_features (R, the number of random features) or W (R, D)")
        W = orthogonal_random_features(num_features, D, generator=generator, dtype=q.dtype,
                                       device=q.device)
    elif num_features is not None and num_features != W.shape[0]:
        raise ValueError(f"num_features={num_features} but W has {W.shape[0]} rows")
    scale = 1.0 / math.sqrt(D) if scale is None else float(scale)
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    root = math.sqrt(scale)  # split the scale between q and k: (r q) . (r k) = scale q . k
    phi_q = positive_random_features(q * root, W, stabilizer="row")  # (..., T, R)
    phi_k = positive_random_features(k * root, W, stabilizer="all")  # (..., S, R)
    return kernel_attention(phi_q, phi_k, v, causal=causal, eps=eps)  # (..., T, Dv)
