"""Static HTML for a saved ipywidgets view: the first picture, without a kernel.

A notebook saved with its widget state (``metadata.widgets``, mime type
``application/vnd.jupyter.widget-state+json``, format 2.0 of @jupyter-widgets) holds
every model's properties, and an Image model's bytes as a base64 buffer. The official
renderer of that state is @jupyter-widgets/html-manager, a JavaScript bundle that is
only published to npm and CDNs. The course's website must work offline, so this module
renders the saved state itself, in Python, once, at build time:

- Image: an ``<img>`` with the PNG (or JPEG, GIF, SVG) inlined as a data URI;
- HTML, HTMLMath, Label: the saved text;
- sliders, dropdowns, toggle buttons, checkboxes, text boxes, buttons, progress bars:
  disabled HTML controls showing the saved value and the description;
- HBox, VBox, Box, GridBox, Tab, Accordion: nested ``<div>``\\ s;
- Output: its saved outputs (images, HTML, text);
- anything else: its model name, so a new widget type is visible, never silently lost.

Nothing here moves: the live widget needs a kernel, and the page says so next to it.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from typing import Any

STATE_MIME = "application/vnd.jupyter.widget-state+json"
VIEW_MIME = "application/vnd.jupyter.widget-view+json"
_REF = "IPY_MODEL_"
_IMAGE_MIME = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg",
               "gif": "image/gif", "svg+xml": "image/svg+xml", "svg": "image/svg+xml"}

LIVE_NOTE = ("A static picture of this widget as the notebook was saved: its controls do "
             "nothing here. To move them, open the notebook in JupyterLab or Colab and run it "
             "(the widget needs a running kernel).")


def saved_state(notebook: Mapping[str, Any]) -> dict[str, dict]:
    """The saved widget models of a notebook (a parsed .ipynb): model id -> model entry."""
    widgets = notebook.get("metadata", {}).get("widgets", {}) or {}
    return dict((widgets.get(STATE_MIME) or {}).get("state") or {})


def _ref(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith(_REF):
        return value[len(_REF):]
    return None


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _fmt(value: Any, spec: str | None) -> str:
    """The value as the slider's readout shows it (Python's format mini-language, as d3's)."""
    if value is None:
        return ""
    if spec:
        try:
            return format(value, spec.replace("~", ""))
        except (TypeError, ValueError):
            pass
    return str(value)


class WidgetRenderer:
    """Renders one notebook's saved widget views; ``alt`` names the pictures it finds."""

    def __init__(self, state: Mapping[str, dict], alt: str = "widget picture"):
        self.state = state
        self.alt = alt
        self.images = 0

    # -- entry points -----------------------------------------------------------------
    def render_view(self, model_id: str) -> str:
        """The whole view: the widget's static HTML and the line about the live version."""
        body = self.render(model_id, set())
        return (f'<div class="widget-static" data-model-id="{_esc(model_id)}">'
                f'{body}<p class="widget-static-note">{_esc(LIVE_NOTE)}</p></div>')

    def render(self, model_id: str, seen: set[str]) -> str:
        if model_id in seen:  # a cycle would be a corrupt state; never loop on it
            return ""
        entry = self.state.get(model_id)
        if entry is None:
            return (f'<div class="widget-missing">(a widget whose state was not saved: '
                    f'{_esc(model_id)})</div>')
        seen = seen | {model_id}
        name = entry.get("model_name") or entry.get("state", {}).get("_model_name", "")
        kind = name.removesuffix("Model")
        method = getattr(self, f"_render_{kind.lower()}", None)
        state = entry.get("state", {})
        if method is None:
            for family in ("slider", "progress", "text", "box"):
                if kind.lower().endswith(family):
                    method = getattr(self, f"_render_{family}")
                    break
        if method is None:
            return f'<div class="widget-unknown">({_esc(kind)} widget)</div>'
        inner = method(entry, state, seen)
        classes = " ".join(["widget", f"widget-{kind.lower()}"]
                           + [str(c) for c in state.get("_dom_classes") or []])
        return f'<div class="{_esc(classes)}">{inner}</div>'

    # -- helpers ----------------------------------------------------------------------
    def _children(self, state: Mapping, seen: set[str]) -> list[str]:
        out = []
        for child in state.get("children") or []:
            ref = _ref(child)
            if ref is not None:
                out.append(self.render(ref, seen))
        return out

    @staticmethod
    def _label(state: Mapping) -> str:
        text = state.get("description") or ""
        if not text:
            return ""
        shown = text if state.get("description_allow_html") else _esc(text)
        return f'<label class="widget-label">{shown}</label>'

    @staticmethod
    def _selected(state: Mapping) -> tuple[list[str], int | None]:
        labels = [str(x) for x in state.get("_options_labels") or []]
        index = state.get("index")
        if isinstance(index, list):  # multiple selection: the first one
            index = index[0] if index else None
        if not isinstance(index, int) or not 0 <= index < len(labels):
            index = None
        return labels, index

    def _img(self, data_b64: str, fmt: str, width: Any = "", height: Any = "") -> str:
        self.images += 1
        mime = _IMAGE_MIME.get(str(fmt).lower(), "image/png")
        size = "".join(f' {k}="{_esc(v)}"' for k, v in (("width", width), ("height", height)) if v)
        alt = self.alt if self.images == 1 else f"{self.alt} ({self.images})"
        return (f'<img class="widget-image" alt="{_esc(alt)}"{size} '
                f'src="data:{mime};base64,{data_b64}">')

    # -- containers -------------------------------------------------------------------
    def _render_box(self, entry, state, seen):
        return "".join(self._children(state, seen))

    _render_hbox = _render_vbox = _render_gridbox = _render_box

    def _render_tab(self, entry, state, seen):
        titles = list(state.get("titles") or [])
        parts = []
        for i, child in enumerate(self._children(state, seen)):
            title = titles[i] if i < len(titles) and titles[i] else f"{i + 1}"
            parts.append(f'<div class="widget-tab-page"><div class="widget-tab-title">'
                         f'{_esc(title)}</div>{child}</div>')
        return "".join(parts)

    _render_accordion = _render_stack = _render_tab

    # -- pictures and text ------------------------------------------------------------
    def _render_image(self, entry, state, seen):
        data = None
        for buf in entry.get("buffers") or []:
            if list(buf.get("path") or []) == ["value"] and buf.get("encoding") == "base64":
                data = buf.get("data")
        value = state.get("value")
        if data is None and isinstance(value, str) and value:
            data = value  # some savers keep small images in the state itself
        if not data:
            return '<span class="widget-empty">(empty image)</span>'
        return self._img(data, state.get("format") or "png",
                         state.get("width"), state.get("height"))

    def _render_html(self, entry, state, seen):
        return f'{self._label(state)}<div class="widget-html-content">{state.get("value") or ""}</div>'

    _render_htmlmath = _render_html

    def _render_label(self, entry, state, seen):
        return f'<span>{_esc(state.get("value"))}</span>'

    def _render_output(self, entry, state, seen):
        parts = []
        for out in state.get("outputs") or []:
            kind = out.get("output_type")
            if kind == "stream":
                parts.append(f'<pre class="widget-output-text">{_esc(_text(out.get("text")))}</pre>')
            elif kind in ("display_data", "execute_result"):
                parts.append(self._mime_bundle(out.get("data") or {}, seen))
            elif kind == "error":
                parts.append(f'<pre class="widget-output-error">{_esc(out.get("ename"))}: '
                             f'{_esc(out.get("evalue"))}</pre>')
        return "".join(parts)

    def _mime_bundle(self, data: Mapping, seen: set[str]) -> str:
        view = data.get(VIEW_MIME)
        if isinstance(view, Mapping) and view.get("model_id"):
            return self.render(view["model_id"], seen)
        for mime, fmt in (("image/png", "png"), ("image/jpeg", "jpeg"), ("image/gif", "gif")):
            if mime in data:
                return self._img(_text(data[mime]).replace("\n", ""), fmt)
        if "image/svg+xml" in data:
            return f'<div class="widget-output-svg">{_text(data["image/svg+xml"])}</div>'
        if "text/html" in data:
            return f'<div class="widget-output-html">{_text(data["text/html"])}</div>'
        if "text/plain" in data:
            return f'<pre class="widget-output-text">{_esc(_text(data["text/plain"]))}</pre>'
        return ""

    # -- controls ---------------------------------------------------------------------
    def _render_slider(self, entry, state, seen):
        name = entry.get("model_name", "")
        readout = ""
        if "Selection" in name:
            labels, index = self._selected(state)
            lo, hi, step, pos = 0, max(len(labels) - 1, 0), 1, index or 0
            readout = labels[index] if index is not None else ""
        elif "Range" in name:
            lo, hi = state.get("min", 0), state.get("max", 100)
            value = list(state.get("value") or [lo, hi])
            step, pos = state.get("step", 1), value[0]
            spec = state.get("readout_format")
            readout = f"{_fmt(value[0], spec)} – {_fmt(value[-1], spec)}"
        elif "Log" in name:
            lo, hi, step = state.get("min", 0), state.get("max", 4), state.get("step", 0.1)
            value, base = state.get("value", 1.0), state.get("base", 10.0)
            pos = round(math.log(value, base), 12) if value and value > 0 else lo
            readout = _fmt(value, state.get("readout_format"))
        else:
            lo, hi, step = state.get("min", 0), state.get("max", 100), state.get("step", 1)
            pos = state.get("value", lo)
            readout = _fmt(pos, state.get("readout_format"))
        vertical = state.get("orientation") == "vertical"
        return (f'{self._label(state)}<input type="range" disabled min="{_esc(lo)}" '
                f'max="{_esc(hi)}" step="{_esc(step)}" value="{_esc(pos)}"'
                f'{" orient=vertical" if vertical else ""} aria-label="{_esc(state.get("description"))}">'
                + (f'<output class="widget-readout">{_esc(readout)}</output>'
                   if state.get("readout", True) else ""))

    def _render_dropdown(self, entry, state, seen):
        labels, index = self._selected(state)
        options = "".join(f'<option{" selected" if i == index else ""}>{_esc(label)}</option>'
                          for i, label in enumerate(labels))
        return (f'{self._label(state)}<select disabled aria-label="{_esc(state.get("description"))}">'
                f'{options}</select>')

    _render_select = _render_selectmultiple = _render_dropdown

    def _render_togglebuttons(self, entry, state, seen):
        labels, index = self._selected(state)
        buttons = "".join(
            f'<button type="button" disabled class="widget-toggle-button'
            f'{" mod-active" if i == index else ""}" aria-pressed="{str(i == index).lower()}">'
            f'{_esc(label)}</button>' for i, label in enumerate(labels))
        return f'{self._label(state)}<span class="widget-toggle-buttons">{buttons}</span>'

    _render_radiobuttons = _render_togglebuttons

    def _render_checkbox(self, entry, state, seen):
        checked = " checked" if state.get("value") else ""
        return (f'<label class="widget-label"><input type="checkbox" disabled{checked}> '
                f'{_esc(state.get("description"))}</label>')

    def _render_togglebutton(self, entry, state, seen):
        active = bool(state.get("value"))
        return (f'<button type="button" disabled class="widget-toggle-button'
                f'{" mod-active" if active else ""}" aria-pressed="{str(active).lower()}">'
                f'{_esc(state.get("description"))}</button>')

    def _render_button(self, entry, state, seen):
        return f'<button type="button" disabled>{_esc(state.get("description"))}</button>'

    def _render_text(self, entry, state, seen):
        return (f'{self._label(state)}<input type="text" disabled '
                f'value="{_esc(state.get("value"))}" aria-label="{_esc(state.get("description"))}">')

    _render_textarea = _render_text

    def _render_progress(self, entry, state, seen):
        return (f'{self._label(state)}<progress max="{_esc(state.get("max", 100))}" '
                f'value="{_esc(state.get("value", 0))}"></progress>')


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value or "")


def render_view(state: Mapping[str, dict], model_id: str, alt: str = "widget picture") -> str:
    """Static HTML for the view of ``model_id`` in a notebook's saved widget ``state``."""
    return WidgetRenderer(state, alt).render_view(model_id)
