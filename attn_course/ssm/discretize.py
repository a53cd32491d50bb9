"""Three ways to turn x'(t) = A x(t) + B_s u(t) into a recurrence, and their error
(lecture 11).

For a diagonal A (one complex a per state) and a step Delta (code ``dt``):

    Euler (forward):     Abar = 1 + dt a,                 Bbar = dt b
    bilinear (Tustin):   Abar = (1 + dt a/2) / (1 - dt a/2), Bbar = dt b / (1 - dt a/2)
    zero-order hold:     Abar = exp(dt a),                Bbar = (exp(dt a) - 1) / a * b

S4 (Gu, Goel and Re, 2022) uses the bilinear rule, S4D and Mamba's equations the
zero-order hold (Gu et al., 2022; Gu and Dao, 2023); Mamba's implementation pairs
exp(dt a) with the Euler dt b (``"zoh_euler"`` here). The recurrence
h_t = Abar h_{t-1} + Bbar u_t, y_t = 2 Re(c h_t) has the convolution kernel
K_l = 2 Re(c Abar^l Bbar).

The continuous system's answer to an input held constant over each step of length dt
is a convolution too, with the kernel

    K*_l = 2 Re( c integral_{l dt}^{(l+1) dt} exp(a s) b ds ),

which :func:`held_input_kernel` computes by Gauss-Legendre quadrature (it does not use
any of the rules above). Zero-order hold reproduces it exactly (that is its definition),
bilinear to second order in dt and Euler to first order; Euler's Abar also leaves the
unit circle (|1 + dt a| > 1, the recurrence blows up) once dt > -2 Re(a) / |a|^2.

Caveats: diagonal A only; the error is measured on the kernel over a fixed time span, one
way among several (a smooth input would favour bilinear over zero-order hold).
"""

from __future__ import annotations

import numpy as np

__all__ = ["METHODS", "discretize", "discrete_kernel", "held_input_kernel", "kernel_error"]

METHODS = ("euler", "bilinear", "zoh", "zoh_euler")


def discretize(a, b, dt: float, method: str = "zoh"):
    """(Abar, Bbar) for diagonal a (N,) complex, b (N,) and step dt > 0, by ``method``."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not (np.isscalar(dt) and np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a finite number > 0, got {dt!r}")
    a, b = np.asarray(a, dtype=complex), np.asarray(b, dtype=complex)
    if method == "euler":
        return 1 + dt * a, dt * b
    if method == "bilinear":
        return (1 + dt * a / 2) / (1 - dt * a / 2), dt * b / (1 - dt * a / 2)
    abar = np.exp(dt * a)
    if method == "zoh_euler":
        return abar, dt * b
    return abar, (abar - 1) / a * b


def discrete_kernel(a, b, c, dt: float, length: int, method: str = "zoh") -> np.ndarray:
    """K_l = 2 Re(sum_n c_n Abar_n^l Bbar_n) for l = 0 .. length - 1; a, b, c: (N,)."""
    abar, bbar = discretize(a, b, dt, method)
    powers = abar[:, None] ** np.arange(length)[None, :]  # (N, length)
    return 2 * ((np.asarray(c, dtype=complex) * bbar) @ powers).real  # (length,)


def held_input_kernel(a, b, c, dt: float, length: int, nodes: int = 16) -> np.ndarray:
    """K*_l: the continuous system's kernel for an input held over each step, by quadrature.

    Integrates 2 Re(c exp(a s) b) over [l dt, (l + 1) dt] with ``nodes``-point
    Gauss-Legendre quadrature on each step; a, b, c: (N,).
    """
    a, b, c = (np.asarray(x, dtype=complex) for x in (a, b, c))
    x, w = np.polynomial.legendre.leggauss(nodes)  # nodes and weights on [-1, 1]
    # exp(a (l dt + o)) = exp(a l dt) exp(a o) for the offsets o of the nodes in a step:
    # length + nodes exponentials per state instead of length * nodes
    start = np.exp(np.arange(length)[:, None] * dt * a[None, :])  # (length, N)
    offset = np.exp((x[:, None] + 1) * dt / 2 * a[None, :])  # (nodes, N)
    f = 2 * (start @ (offset * (c * b)).T).real  # (length, nodes)
    return f @ w * dt / 2  # (length,)


def kernel_error(a, b, c, dt: float, span: float, method: str) -> float:
    """||K - K*|| / ||K*|| over the steps that cover the time span [0, span)."""
    length = max(1, int(np.ceil(span / dt)))
    exact = held_input_kernel(a, b, c, dt, length)
    approx = discrete_kernel(a, b, c, dt, length, method)
    return float(np.linalg.norm(approx - exact) / np.linalg.norm(exact))
