"""A diagonal state-space model (S4D): one recurrence, two ways to compute it (lecture 11).

Gu, Gupta, Goel and Re, "On the Parameterization and Initialization of Diagonal State
Space Models" (NeurIPS 2022), sections 2-3 and listing 1.

Each of the E channels of a sequence u (batch, T, E) runs its own linear system with N
complex states and a diagonal A:

    continuous:   x'(t) = A x(t) + B u(t),   y(t) = C x(t)           A, B, C: (E, N)
    zero-order hold with step dt (u held constant over each step):
        Abar = exp(dt A),   Bbar = (exp(dt A) - 1) / A * B
    recurrent:    x_t = Abar x_{t-1} + Bbar u_t,   y_t = 2 Re(C x_t)
    convolution:  y_t = sum_{s<=t} K_{t-s} u_s,    K_l = 2 Re(sum_n C_n Bbar_n Abar_n^l)

The recurrent form costs O(T N) per channel and needs a loop over time (good for
generation, one token at a time); the convolutional form computes the kernel K with a
Vandermonde matrix (Abar_n^l for all n, l) and applies it with an FFT in O(T log T)
(good for training, all positions at once). They are the same function (tested).

Conventions. N counts complex states; S4D keeps one state of each complex-conjugate
pair, so the output is twice the real part (the dropped partner contributes the
conjugate). Shape letters: ``batch``, T (length), E (channels), N (state size); B is the
SSM's input matrix here, so the batch dimension is spelled out.

Caveats. This is the SSM core only: S4D's full layer adds a skip term D u, a
nonlinearity and mixing across channels. The kernel is computed in float64 or
complex128 when the inputs are, else in float32 / complex64; for long sequences with
eigenvalues near the unit circle, float32 Vandermonde powers lose accuracy.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "S4D",
    "discretize_zoh",
    "fft_causal_conv",
    "s4d_convolutional",
    "s4d_kernel",
    "s4d_lin_init",
    "s4d_recurrent",
]


def s4d_lin_init(E: int, N: int, dtype: torch.dtype = torch.complex64) -> torch.Tensor:
    """S4D-Lin initialisation A_n = -1/2 + i pi n, the same for every channel: (E, N)."""
    n = torch.arange(N, dtype=torch.float64)
    A = torch.complex(-0.5 * torch.ones(N, dtype=torch.float64), math.pi * n)  # (N,)
    return A.expand(E, N).to(dtype).clone()  # (E, N)


def _check_ABC(A, B, C, dt):
    for name, x in (("A", A), ("B", B), ("C", C), ("dt", dt)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(x).__name__}")
    if A.ndim != 2 or B.shape != A.shape or C.shape != A.shape:
        raise ValueError(
            f"A, B and C must all have shape (E, N), got A {tuple(A.shape)}, "
            f"B {tuple(B.shape)}, C {tuple(C.shape)}"
        )
    if dt.shape != A.shape[:1]:
        raise ValueError(f"dt must have shape (E,) = ({A.shape[0]},), got {tuple(dt.shape)}")
    if (dt <= 0).any():
        raise ValueError("dt must be positive (it is a time step)")
    if (A.real >= 0).any():
        raise ValueError("A must have negative real parts (a stable system); got some >= 0")


def discretize_zoh(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor):
    """Zero-order hold: A, B (E, N) complex, dt (E,) -> (Abar, Bbar), each (E, N)."""
    dtA = dt[:, None] * A  # (E, N)
    Abar = torch.exp(dtA)
    Bbar = torch.expm1(dtA) / A * B  # (exp(dt A) - 1) / A * B
    return Abar, Bbar


def s4d_kernel(A: torch.Tensor, B: torch.Tensor, C: torch.Tensor, dt: torch.Tensor,
               T: int) -> torch.Tensor:
    """The convolution kernel K (E, T): K[d, l] = 2 Re(sum_n C Bbar Abar^l)."""
    _check_ABC(A, B, C, dt)
    _, Bbar = discretize_zoh(A, B, dt)
    powers = torch.arange(T, device=A.device, dtype=dt.dtype)  # (T,)
    dtA = (dt[:, None] * A)[:, :, None]  # (E, N, 1)
    # Abar^l = exp(l dt A) = exp(l Re(dt A)) * e^{i l Im(dt A)}: real exp, cos and sin are
    # several times faster than a complex exp, and exact powers avoid repeated products.
    vandermonde = torch.polar(torch.exp(dtA.real * powers), dtA.imag * powers)  # (E, N, T)
    return 2 * torch.einsum("dn,dnl->dl", C * Bbar, vandermonde).real  # (E, T)


def fft_causal_conv(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """y_t = sum_{s<=t} K[:, t - s] u_s per channel: u (batch, T, E), K (E, T) -> (batch, T, E).

    Zero-pads to length 2T so that the FFT's circular convolution does not wrap around.
    """
    T = u.shape[-2]
    if K.shape != (u.shape[-1], T):
        raise ValueError(f"K must have shape (E, T) = {(u.shape[-1], T)}, got {tuple(K.shape)}")
    n = 2 * T
    U = torch.fft.rfft(u.transpose(-1, -2), n=n)  # (batch, E, T + 1) complex
    Kf = torch.fft.rfft(K, n=n)  # (E, T + 1)
    y = torch.fft.irfft(U * Kf, n=n)[..., :T]  # (batch, E, T)
    return y.transpose(-1, -2)  # (batch, T, E)


def _check_u(u, A):
    if not isinstance(u, torch.Tensor) or u.ndim != 3 or u.shape[-1] != A.shape[0]:
        got = tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
        raise ValueError(f"u must be a tensor of shape (batch, T, E) with E = {A.shape[0]}, got {got}")


def s4d_convolutional(u: torch.Tensor, A, B, C, dt) -> torch.Tensor:
    """The SSM applied as one long convolution: u (batch, T, E) -> y (batch, T, E)."""
    _check_u(u, A)
    K = s4d_kernel(A, B, C, dt, u.shape[1])  # (E, T)
    return fft_causal_conv(u, K.to(u.dtype))


def s4d_recurrent(u: torch.Tensor, A, B, C, dt, x0: torch.Tensor | None = None,
                  return_state: bool = False):
    """The SSM run step by step: u (batch, T, E) -> y (batch, T, E).

    x0: initial state (batch, E, N) complex, zeros by default. With ``return_state``
    also returns the final state, to continue the sequence later.
    """
    _check_u(u, A)
    _check_ABC(A, B, C, dt)
    Abar, Bbar = discretize_zoh(A, B, dt)  # (E, N) each
    x = u.new_zeros(u.shape[0], *A.shape, dtype=A.dtype) if x0 is None else x0  # (batch, E, N)
    ys = []
    for t in range(u.shape[1]):
        x = Abar * x + Bbar * u[:, t, :, None]  # (batch, E, N)
        ys.append(2 * (x * C).sum(dim=-1).real)  # (batch, E)
    y = torch.stack(ys, dim=1).to(u.dtype)  # (batch, T, E)
    return (y, x) if return_state else y


class S4D(nn.Module):
    """A learnable S4D layer (the SSM plus a skip term D u), after listing 1 of the paper.

    Args: d_model (E channels), d_state (N complex states), dt_min, dt_max: range of
    the initial time steps (log-uniform). A starts at S4D-Lin; B is fixed to ones (it
    can be folded into C); C is complex, initialised N(0, 1/2) per part.
    Forward: u (batch, T, E) -> y (batch, T, E), ``mode`` "conv" or "recurrent".
    """

    def __init__(self, d_model: int, d_state: int = 32, dt_min: float = 1e-3,
                 dt_max: float = 1e-1):
        super().__init__()
        for name, val in (("d_model", d_model), ("d_state", d_state)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be a positive integer, got {val!r}")
        log_dt = torch.rand(d_model) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        A = s4d_lin_init(d_model, d_state)
        self.log_dt = nn.Parameter(log_dt)  # (E,)
        self.log_A_real = nn.Parameter(torch.log(-A.real))  # (E, N): keeps Re(A) < 0
        self.A_imag = nn.Parameter(A.imag.clone())  # (E, N)
        self.C = nn.Parameter(torch.view_as_real(torch.randn(d_model, d_state, dtype=torch.cfloat)))
        self.register_buffer("B", torch.ones(d_model, d_state, dtype=torch.cfloat))
        self.D = nn.Parameter(torch.randn(d_model))  # (E,) skip

    def parameters_ABC(self):
        """The current (A, B, C, dt) in the shapes the functions above take."""
        A = torch.complex(-torch.exp(self.log_A_real), self.A_imag)  # (E, N)
        return A, self.B, torch.view_as_complex(self.C), torch.exp(self.log_dt)

    def forward(self, u: torch.Tensor, mode: str = "conv") -> torch.Tensor:
        if mode not in ("conv", "recurrent"):
            raise ValueError(f"mode must be 'conv' or 'recurrent', got {mode!r}")
        A, B, C, dt = self.parameters_ABC()
        ssm = s4d_convolutional if mode == "conv" else s4d_recurrent
        return ssm(u, A, B, C, dt) + u * self.D  # (batch, T, E)
