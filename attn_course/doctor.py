"""``attn-course doctor``: what this machine can run of the course.

Reports library versions, whether CUDA is available (and which GPU), whether Triton
kernels would run compiled on a GPU or under the CPU interpreter (TRITON_INTERPRET=1),
and whether JupyterLab has the widget extension that renders ipywidgets.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys

PACKAGES = ["numpy", "torch", "matplotlib", "ipywidgets", "jupyterlab", "triton"]


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cuda_report() -> tuple[bool, str]:
    import torch

    if not torch.cuda.is_available():
        return False, "not available (the course runs on the CPU)"
    i = torch.cuda.current_device()
    cap = torch.cuda.get_device_capability(i)
    return True, f"{torch.cuda.get_device_name(i)} (compute capability {cap[0]}.{cap[1]})"


def triton_mode(has_cuda: bool) -> str:
    if version("triton") == "not installed":
        return "unavailable: triton is not installed (pip install 'attn-course[gpu]')"
    # The same decision as attn_course.flash.triton_mode.interpreter_wanted (tested).
    flag = os.environ.get("TRITON_INTERPRET")
    if flag is not None and flag.strip().lower() in ("1", "true", "yes", "on", "y"):
        return (f"CPU interpreter (TRITON_INTERPRET={flag} is set): correct but slow, "
                f"small sizes only")
    if has_cuda:
        return "compiled for the GPU"
    if flag is not None:
        return (f"unavailable: no GPU, and TRITON_INTERPRET={flag} turns the CPU interpreter "
                f"off (unset it)")
    return "CPU interpreter: no GPU, so kernels run with TRITON_INTERPRET=1 (small sizes only)"


def widget_extension() -> str:
    """Whether JupyterLab will render ipywidgets: its widget manager extension on disk."""
    try:
        from jupyter_core.paths import jupyter_path
    except ImportError:
        return "unknown: jupyter_core is not installed"
    for root in jupyter_path("labextensions"):
        path = os.path.join(root, "@jupyter-widgets", "jupyterlab-manager")
        if os.path.isfile(os.path.join(path, "package.json")):
            return f"installed ({path})"
    return ("missing: widgets will show as text in JupyterLab; "
            "pip install jupyterlab_widgets, then restart JupyterLab")


def report() -> list[tuple[str, str]]:
    rows = [("python", f"{platform.python_version()} ({sys.executable})")]
    rows += [(name, version(name)) for name in PACKAGES]
    has_cuda, cuda = cuda_report()
    rows += [("CUDA", cuda), ("Triton kernels", triton_mode(has_cuda)),
             ("JupyterLab widgets", widget_extension())]
    return rows


def main() -> int:
    rows = report()
    width = max(len(k) for k, _ in rows)
    print("attn-course doctor")
    for key, val in rows:
        print(f"  {key:<{width}}  {val}")
    return 0
