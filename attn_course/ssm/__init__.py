"""State-space models (lecture 11): linear attention -> RNN -> SSM -> selective scan.

- :mod:`~attn_course.ssm.s4d`: a diagonal SSM (S4D), recurrent and convolutional forms;
- :mod:`~attn_course.ssm.selective_scan`: Mamba's input-dependent scan, sequential and
  chunked;
- :mod:`~attn_course.ssm.ssd`: Mamba-2's scalar-A scan, each chunk a few matrix products;
- :mod:`~attn_course.ssm.discretize`: Euler, bilinear and zero-order hold, and their
  kernel error against the continuous system;
- :mod:`~attn_course.ssm.hippo`: HiPPO-LegS and the S4D initialisations derived from it;
- :mod:`~attn_course.ssm.scan`: associative (parallel prefix) scans of the recurrence,
  with their work and depth counted.
"""

from attn_course.ssm.s4d import (
    S4D,
    discretize_zoh,
    fft_causal_conv,
    s4d_convolutional,
    s4d_kernel,
    s4d_lin_init,
    s4d_recurrent,
)
from attn_course.ssm.scan import (
    blelloch_scan,
    hillis_steele_scan,
    linear_recurrence_loop,
    selective_scan_associative,
)
from attn_course.ssm.selective_scan import (
    SelectiveSSM,
    selective_scan_chunked,
    selective_scan_sequential,
    selective_scan_step,
)
from attn_course.ssm.ssd import expand_scalar_A, ssd_chunked, ssd_sequential

__all__ = [
    "S4D",
    "SelectiveSSM",
    "blelloch_scan",
    "discretize_zoh",
    "expand_scalar_A",
    "fft_causal_conv",
    "hillis_steele_scan",
    "linear_recurrence_loop",
    "s4d_convolutional",
    "s4d_kernel",
    "s4d_lin_init",
    "s4d_recurrent",
    "selective_scan_associative",
    "selective_scan_chunked",
    "selective_scan_sequential",
    "selective_scan_step",
    "ssd_chunked",
    "ssd_sequential",
]
