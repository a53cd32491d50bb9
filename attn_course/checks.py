"""Former name of :mod:`attn_course.validation` (argument validation), kept for old imports."""

from attn_course.validation import (  # noqa: F401
    broadcast_shape,
    is_floating,
    require_array,
    require_positive,
    shape_of,
)
