"""FlashAttention-2 in Triton (lecture 09): the kernels and their autograd wrapper.

- ``mode``: picks compiled (GPU) or interpreted (CPU, ``TRITON_INTERPRET=1``) before it
  imports triton; every other module here takes ``triton`` and ``tl`` from it;
- ``forward`` and ``backward``: the ``@triton.jit`` kernels (Dao, "FlashAttention-2",
  2023, Algorithms 1 and 2);
- ``kernel``: autotuning, launchers, ``FlashAttentionFunction`` and ``flash_attention``.

Importing this package imports triton (and so fixes the mode): ``attn_course.flash``
does not import it; ``attn_course.flash.attention(..., impl="triton")`` loads it on first
use.
"""

from attn_course.flash.triton.kernel import (
    INTERPRET,
    INTERPRETER_TILES,
    FlashAttentionFunction,
    Tiles,
    flash_attention,
    tiles_used,
)

__all__ = ["INTERPRET", "INTERPRETER_TILES", "FlashAttentionFunction", "Tiles",
           "flash_attention", "tiles_used"]
