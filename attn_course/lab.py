"""How ``make lab`` starts JupyterLab: on the course's landing page, with its settings.

The landing page is ``README.md`` rendered as a Markdown preview: the syllabus table
links every lecture and exercise, and clicking a link opens the notebook in JupyterLab.
The README is the one place that lists them, so a separate start notebook would repeat
it (and drift).

The settings ship with the course in ``attn_course/lab_settings/overrides.json``, passed
to JupyterLab as its application settings folder (``--LabApp.app_settings_dir``); nothing
is written to the learner's home, and a learner's own settings still apply on top. They
turn off the news prompt ("Would you like to get notified about official Jupyter
news?"), which also means JupyterLab fetches no news and checks for no update, and open
Markdown files as a rendered preview (right-click, *Open With*, *Editor* edits them).

``attn-course lab [JUPYTERLAB ARGS]`` runs :func:`lab_command`; the browser test
starts JupyterLab with the same function.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SETTINGS = Path(__file__).resolve().parent / "lab_settings"
LANDING = "README.md"


def lab_args(root: str | Path = ".") -> list[str]:
    """JupyterLab's options for the course folder ``root`` (which holds ``README.md``)."""
    return [f"--ServerApp.root_dir={root}", f"--LabApp.app_settings_dir={SETTINGS}",
            f"--LabApp.default_url=/lab/tree/{LANDING}"]


def lab_command(root: str | Path = ".", extra: list[str] | tuple = ()) -> list[str]:
    return [sys.executable, "-m", "jupyterlab", *lab_args(root), *extra]


def main(args) -> int:
    cmd = lab_command(Path(args.root).resolve(), args.jupyterlab_args)
    os.execv(cmd[0], cmd)  # JupyterLab takes over this process (and Ctrl-C)
    return 0  # not reached


def register(sub) -> None:
    p = sub.add_parser("lab", help="open the course in JupyterLab, on its landing page")
    p.add_argument("--root", default=".", help="the course folder (default: here)")
    p.add_argument("jupyterlab_args", nargs="*", metavar="JUPYTERLAB_ARG",
                   help="passed on to JupyterLab (after --), e.g. -- --no-browser")
    p.set_defaults(func=main)
