"""triton_available(): whether ``import triton`` would work, asked without importing it.

Triton has wheels for Linux only, so lecture 09 asks this before its kernel cells and skips
them, with one line on how to get Triton, where it is missing.
"""

from __future__ import annotations

import importlib.util
import io
import json
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

from attn_course import flash

LECTURE = Path(__file__).resolve().parents[1] / "notebooks" / "09_flash_attention.ipynb"


def fake_find_spec(monkeypatch, found: bool):
    """importlib.util.find_spec, except that it finds triton only when ``found``."""
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == "triton" or name.startswith("triton."):
            return real("json") if found else None  # any spec stands for "importable"
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize("found", [True, False])
def test_triton_available_follows_find_spec(monkeypatch, found):
    fake_find_spec(monkeypatch, found)
    assert flash.triton_available() is found


def test_without_triton_auto_runs_sdpa_and_triton_says_how_to_install(monkeypatch):
    fake_find_spec(monkeypatch, False)
    q = torch.randn(1, 2, 8, 4)
    assert flash.resolve_impl("auto", q) == "sdpa"
    torch.testing.assert_close(flash.attention(q, q, q, impl="auto"),
                               torch.nn.functional.scaled_dot_product_attention(q, q, q))
    with pytest.raises(RuntimeError, match="pip install"):
        flash.attention(q, q, q, impl="triton")


def test_importing_the_package_does_not_import_triton():
    code = "import sys, attn_course.flash; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_lecture_09_skips_its_kernel_cells_without_triton(monkeypatch):
    """The lecture's cells that use Triton, run in order with triton_available() False:
    each prints the one line on how to get Triton, and nothing imports the kernel."""
    fake_find_spec(monkeypatch, False)
    cells = [c for c in json.loads(LECTURE.read_text())["cells"] if c["cell_type"] == "code"]
    uses = [c for c in cells if "HAVE_TRITON" in "".join(c["source"])]
    assert len(uses) >= 5
    namespace = {"torch": torch, "F": torch.nn.functional}
    for cell in uses:
        source = "".join(cell["source"])
        out = io.StringIO()
        with redirect_stdout(out):
            exec(compile(source, "<lecture 09 cell>", "exec"), namespace)
        printed = out.getvalue()
        if "tk." in source:  # a cell that would run the kernel says why it does not
            assert "Triton is not installed" in printed or "no CUDA GPU" in printed, source
    assert namespace["HAVE_TRITON"] is False
    assert "tk" not in namespace
    assert "pip install triton" in namespace["NO_TRITON"]
    assert "Colab" in namespace["NO_TRITON"]
