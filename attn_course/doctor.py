"""``attn-course doctor``: what this machine can run of the course.

Reports library versions, whether CUDA is available (and which GPU), whether Triton
kernels would run compiled on a GPU or under the CPU interpreter (TRITON_INTERPRET=1),
and whether JupyterLab has the widget extension that renders ipywidgets.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
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


def _release(text: str) -> tuple[int, ...]:
    """(major, minor) of a version string such as '3.6.0' or '2.4.0rc1'."""
    parts = [re.match(r"\d*", piece).group() for piece in text.split(".")[:2]]
    return tuple(int(p) if p else 0 for p in parts)


def interpreter_conflict(triton_version: str, numpy_version: str) -> str | None:
    """Why Triton's CPU interpreter cannot run the course's kernels here, or None.

    Triton before 3.7 converts loop bounds with ``int(array)``, which numpy 2.4 turned
    into an error for one-element arrays: every kernel with a ``tl.range`` loop then fails
    under ``TRITON_INTERPRET=1`` ("only 0-dimensional arrays can be converted to Python
    scalars"). Compiled GPU kernels are not affected.
    """
    if "not installed" in (triton_version, numpy_version):
        return None
    if _release(triton_version) < (3, 7) and _release(numpy_version) >= (2, 4):
        return (f"triton {triton_version}'s CPU interpreter fails with numpy "
                f"{numpy_version}: install triton>=3.7 or numpy<2.4 (pip install 'numpy<2.4')")
    return None


def triton_mode(has_cuda: bool) -> str:
    if version("triton") == "not installed":
        return "unavailable: triton is not installed (pip install 'attn-course[gpu]')"
    # The same decision as attn_course.flash.triton.mode.interpreter_wanted (tested).
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


def triton_report(has_cuda: bool) -> str:
    """triton_mode, with the interpreter's known conflict appended when it applies."""
    mode = triton_mode(has_cuda)
    conflict = interpreter_conflict(version("triton"), version("numpy"))
    if mode.startswith("CPU interpreter") and conflict:
        mode += f"; WARNING: {conflict}"
    return mode


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
    rows += [("CUDA", cuda), ("Triton kernels", triton_report(has_cuda)),
             ("JupyterLab widgets", widget_extension())]
    rows.append(("grading isolation", grading_isolation()))
    return rows


def grading_isolation() -> str:
    """Where ``attn-course grade`` would run learners' code on this machine."""
    from attn_course.grading.isolation import detect

    found = detect()
    return f"{found.mode}: {found.detail}"


def main() -> int:
    rows = report()
    width = max(len(k) for k, _ in rows)
    print("attn-course doctor")
    for key, val in rows:
        print(f"  {key:<{width}}  {val}")
    return 0
