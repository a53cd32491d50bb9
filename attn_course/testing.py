"""Comparing numbers the way the course's tests do.

``assert_close(actual, expected, name)`` prints the max and mean absolute error and the
tolerance in force before it fails, so a failure says by how much, not only where.
The tolerances per dtype live here, in one place.

``assert_error_within(actual, same_dtype_ref, exact, name)`` is the rule
flash-attention's tests use for low-precision kernels: the kernel's error against an
exact (float64) result may be at most ``factor`` times the error of PyTorch's own
same-dtype computation, plus a small floor.
"""

from __future__ import annotations

import numpy as np
import torch

#: (atol, rtol) per dtype name; chosen from the unit roundoff of each format
#: (bf16 eps = 2^-8, fp16 eps = 2^-11, fp32 eps = 2^-24) with room for sums of a few
#: hundred terms.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-10, 1e-8),
    "float32": (1e-5, 1e-4),
    "float16": (2e-3, 2e-3),
    "bfloat16": (1.6e-2, 1.6e-2),
}


def _dtype_name(x) -> str:
    if isinstance(x, torch.Tensor):
        return str(x.dtype).removeprefix("torch.")
    return str(np.asarray(x).dtype)


def tolerances(dtype) -> tuple[float, float]:
    """(atol, rtol) for a dtype, a dtype name, an array or a tensor."""
    if isinstance(dtype, (np.ndarray, torch.Tensor)):
        name = _dtype_name(dtype)
    elif isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
    elif isinstance(dtype, str) and dtype in TOLERANCES:
        name = dtype
    else:
        name = str(np.dtype(dtype))
    if name not in TOLERANCES:
        raise ValueError(f"no tolerance for dtype {name!r}; known: {sorted(TOLERANCES)}")
    return TOLERANCES[name]


def to_float64(x) -> np.ndarray:
    """A float64 numpy copy of an array or tensor (detached, on the CPU)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def error_stats(actual, expected) -> tuple[float, float]:
    """(max, mean) absolute error, computed in float64; NaN where either has NaN."""
    a, e = to_float64(actual), to_float64(expected)
    err = np.abs(a - e)
    if err.size == 0:
        return 0.0, 0.0
    both_inf = np.isinf(a) & np.isinf(e) & (np.sign(a) == np.sign(e))
    err = np.where(both_inf, 0.0, err)
    return float(np.max(err)), float(np.mean(err))


def assert_close(actual, expected, name: str = "value", atol: float | None = None,
                 rtol: float | None = None) -> None:
    """Fail unless |actual - expected| <= atol + rtol * |expected| everywhere.

    The tolerances default to those of ``actual``'s dtype (the lower-precision side is
    the one being checked). Shapes must match exactly; NaN never equals anything.
    """
    a, e = to_float64(actual), to_float64(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{name}: shape {a.shape} != expected shape {e.shape}")
    d_atol, d_rtol = tolerances(_dtype_name(actual))
    atol = d_atol if atol is None else atol
    rtol = d_rtol if rtol is None else rtol
    max_err, mean_err = error_stats(a, e)
    nan = np.isnan(a) | np.isnan(e)
    with np.errstate(invalid="ignore"):
        ok = ~nan & ((np.abs(a - e) <= atol + rtol * np.abs(e)) | (a == e))
    summary = (f"{name}: max abs error {max_err:.3e}, mean abs error {mean_err:.3e} "
               f"(atol={atol:.1e}, rtol={rtol:.1e}, dtype {_dtype_name(actual)})")
    if not ok.all():
        bad = np.argwhere(~ok)
        first = tuple(int(i) for i in bad[0])
        raise AssertionError(
            f"{summary}\n  {len(bad)} of {a.size} elements differ; first at index {first}: "
            f"actual {a[first]!r}, expected {e[first]!r}"
            + (f"; {int(nan.sum())} NaN" if nan.any() else "")
        )
    print(summary)


def assert_error_within(actual, same_dtype_ref, exact, name: str = "value",
                        factor: float = 2.0, floor: float | None = None) -> None:
    """Fail unless max|actual - exact| <= factor * max|same_dtype_ref - exact| + floor.

    ``exact`` is a float64 result; ``same_dtype_ref`` is PyTorch's own computation in
    ``actual``'s dtype, which sets how much error that dtype makes unavoidable.
    ``floor`` defaults to the dtype's atol.
    """
    ours, _ = error_stats(actual, exact)
    ref, _ = error_stats(same_dtype_ref, exact)
    floor = tolerances(_dtype_name(actual))[0] if floor is None else floor
    summary = (f"{name}: max error {ours:.3e} vs the reference's {ref:.3e} "
               f"(allowed {factor:g}x + {floor:.1e})")
    if not ours <= factor * ref + floor:
        raise AssertionError(summary)
    print(summary)
