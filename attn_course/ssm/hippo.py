"""Where S4D's initialisations come from: HiPPO-LegS and its diagonal approximations
(lecture 11).

HiPPO (Gu, Dao, Ermon, Rudra and Re, "HiPPO: Recurrent Memory with Optimal Polynomial
Projections", NeurIPS 2020) derives the state matrix A for which the state x(t) holds the
coefficients of the best approximation of the input's whole history u(s), s <= t, by
Legendre polynomials (the "LegS" measure, uniform over the past):

    A_nk = -sqrt(2n + 1) sqrt(2k + 1)   n > k
    A_nn = -(n + 1)
    A_nk = 0                            n < k

S4 (Gu, Goel and Re, ICLR 2022) writes it as normal plus low rank, A = A_N - P P^T with
P_n = sqrt(n + 1/2): A_N = -I/2 + S with S skew-symmetric, so A_N's eigenvalues all have
real part exactly -1/2. S4D (Gu, Gupta, Goel and Re, "On the Parameterization and
Initialization of Diagonal State Space Models", NeurIPS 2022) drops the low-rank part and
keeps A_N's eigenvalues, one of each complex-conjugate pair (N/2 of them, "S4D-LegS"), and
gives two closed forms for them:

    S4D-Inv:  a_n = -1/2 + i (N / pi) (N / (2n + 1) - 1)    approximates S4D-LegS
    S4D-Lin:  a_n = -1/2 + i pi n                          damped Fourier frequencies

for n = 0 .. N/2 - 1 (``attn_course.ssm.s4d_lin_init`` is the last, one row per channel).

Caveats: numpy, float64; the eigenvalues of A_N are computed with ``numpy.linalg.eigvals``,
accurate for the sizes of the lecture (N up to a few hundred).
"""

from __future__ import annotations

import numpy as np

__all__ = ["hippo_legs", "legs_normal_part", "s4d_inv", "s4d_legs", "s4d_lin"]


def _even(N) -> int:
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 2 or N % 2:
        raise ValueError(f"N must be an even integer >= 2 (the state size), got {N!r}")
    return int(N)


def hippo_legs(N: int) -> np.ndarray:
    """The HiPPO-LegS matrix A (N, N), lower triangular."""
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise ValueError(f"N must be a positive integer (the state size), got {N!r}")
    r = np.sqrt(2 * np.arange(N) + 1.0)  # (N,)
    A = -np.tril(np.outer(r, r), k=-1)  # (N, N) below the diagonal
    return A - np.diag(np.arange(1.0, N + 1))


def legs_normal_part(N: int):
    """(A_N, P): A = A_N - P P^T with P_n = sqrt(n + 1/2); A_N + A_N^T = -I."""
    P = np.sqrt(np.arange(N) + 0.5)  # (N,)
    return hippo_legs(N) + np.outer(P, P), P


def s4d_legs(N: int) -> np.ndarray:
    """The N/2 eigenvalues of A_N with positive imaginary part, by increasing imaginary part."""
    N = _even(N)
    ev = np.linalg.eigvals(legs_normal_part(N)[0])  # (N,)
    ev = ev[ev.imag > 0]
    return ev[np.argsort(ev.imag)]  # (N/2,)


def s4d_inv(N: int) -> np.ndarray:
    """S4D-Inv: -1/2 + i (N / pi) (N / (2n + 1) - 1), n = 0 .. N/2 - 1, by increasing imaginary part."""
    N = _even(N)
    n = np.arange(N // 2)
    return (-0.5 + 1j * (N / np.pi) * (N / (2 * n + 1) - 1))[::-1]  # (N/2,)


def s4d_lin(N: int) -> np.ndarray:
    """S4D-Lin: -1/2 + i pi n, n = 0 .. N/2 - 1."""
    N = _even(N)
    return -0.5 + 1j * np.pi * np.arange(N // 2)  # (N/2,)
