"""Efficient alternatives to full attention (lecture 10).

- :mod:`~attn_course.efficient.sliding_window`: local attention in O(T w) memory;
- :mod:`~attn_course.efficient.linear`: linear attention, parallel and recurrent;
- :mod:`~attn_course.efficient.linformer`: keys and values projected to length P;
- :mod:`~attn_course.efficient.performer`: FAVOR+ positive random features;
- :mod:`~attn_course.efficient.recall`: what each one can still retrieve, measured.
"""

from attn_course.efficient.linear import (
    elu_feature_map,
    kernel_attention,
    linear_attention,
    linear_attention_recurrent,
    linear_attention_step,
)
from attn_course.efficient.linformer import LinformerSelfAttention, linformer_attention
from attn_course.efficient.performer import (
    orthogonal_random_features,
    performer_attention,
    positive_random_features,
    softmax_kernel_estimate,
)
from attn_course.efficient.sliding_window import sliding_window_attention, sliding_window_mask

__all__ = [
    "LinformerSelfAttention",
    "elu_feature_map",
    "kernel_attention",
    "linear_attention",
    "linear_attention_recurrent",
    "linear_attention_step",
    "linformer_attention",
    "orthogonal_random_features",
    "performer_attention",
    "positive_random_features",
    "sliding_window_attention",
    "sliding_window_mask",
    "softmax_kernel_estimate",
]
