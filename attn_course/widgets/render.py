"""Matplotlib figures rendered to PNG bytes for ``ipywidgets.Image``.

The course's widgets use only core ipywidgets: each redraw builds a
``matplotlib.figure.Figure`` (no pyplot, so nothing is shown twice or leaks between
cells), renders it with the Agg backend and hands the PNG bytes to an Image widget.
That works in every front end that renders core widgets (JupyterLab, Notebook 7,
VS Code, Colab) without a custom widget manager.
"""

from __future__ import annotations

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(width: float = 6.0, height: float = 3.5) -> Figure:
    fig = Figure(figsize=(width, height), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_to_png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
