"""Which mode Triton runs in: compiled for the GPU, or its CPU interpreter (lecture 09).

Triton's interpreter (``TRITON_INTERPRET=1``) runs kernels on the CPU with numpy:
correct, but thousands of times slower than a GPU, so only small sizes are practical.
Triton reads the variable when it is imported and when kernels are defined, so this
module decides first, then imports triton; the kernel modules of ``attn_course.flash``
take ``triton`` and ``tl`` from here, never import triton themselves. Unset, the
interpreter is chosen exactly when CUDA is unavailable; an explicit value wins
(``TRITON_INTERPRET=0`` opts out). ``attn-course doctor`` reports the same decision.

Caveat: if triton was already imported without the variable on a machine without a GPU,
the kernels cannot run interpreted; a warning says so (restart Python, or set
``TRITON_INTERPRET=1`` before anything imports triton).
"""

from __future__ import annotations

import os
import sys
import warnings

import torch

__all__ = ["INTERPRET", "interpreter_wanted", "tl", "triton"]

_TRUE = ("1", "true", "yes", "on", "y")  # the values Triton itself reads as "set"


def interpreter_wanted(env_value: str | None, has_cuda: bool) -> bool:
    """Whether the kernels run interpreted, given TRITON_INTERPRET and CUDA's presence.

    An explicit TRITON_INTERPRET wins; unset, the interpreter is used exactly when there
    is no GPU. ``attn-course doctor`` reports the same decision.
    """
    if env_value is not None:
        return env_value.strip().lower() in _TRUE
    return not has_cuda


if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # must precede `import triton` (see the docstring)
    if "triton" in sys.modules:
        warnings.warn("triton was imported before attn_course.flash.triton.kernel without "
                      "TRITON_INTERPRET=1 and there is no GPU: the kernels may fail. Set "
                      "TRITON_INTERPRET=1 before importing triton (or restart Python and "
                      "import attn_course.flash.triton.kernel first).", stacklevel=2)


import triton  # noqa: E402
import triton.language as tl  # noqa: E402

#: True when the kernels run under Triton's CPU interpreter.
INTERPRET = interpreter_wanted(os.environ.get("TRITON_INTERPRET"), torch.cuda.is_available())

if INTERPRET:
    import numpy  # noqa: E402

    from attn_course.doctor import interpreter_conflict  # noqa: E402

    _conflict = interpreter_conflict(triton.__version__, numpy.__version__)
    if _conflict:
        warnings.warn(f"attn_course.flash cannot run its kernels: {_conflict}",
                      stacklevel=2)
