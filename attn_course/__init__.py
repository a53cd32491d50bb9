"""attn_course: tested implementations behind the self-attention course."""

__version__ = "0.1.0"
