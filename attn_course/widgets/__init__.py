"""Interactive views for the course: thin ipywidgets over pure compute functions.

Each widget's model is a pure function (tested without a browser); the widget only
collects control values, calls the function on ``observe(..., names="value")`` and
draws the result into an ``ipywidgets.Image``.
"""

from attn_course.widgets.attention_explorer import AttentionExplorer, explorer_state
from attn_course.widgets.head_viewer import HeadViewer, capture_attention
from attn_course.widgets.softmax_temperature import SoftmaxTemperature, temperature_state
from attn_course.widgets.tiling_stepper import TilingStepper, tiling_state

__all__ = [
    "AttentionExplorer",
    "HeadViewer",
    "SoftmaxTemperature",
    "TilingStepper",
    "capture_attention",
    "explorer_state",
    "temperature_state",
    "tiling_state",
]
