import subprocess
import sys

import pytest

from attn_course import doctor
from attn_course.cli import main


def test_doctor_reports_every_item(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    for key in ("python", "numpy", "torch", "ipywidgets", "jupyterlab", "triton", "CUDA",
                "Triton kernels", "JupyterLab widgets"):
        assert f"  {key} " in out, out


def test_doctor_triton_mode(monkeypatch):
    monkeypatch.setattr(doctor, "version", lambda name: "3.0")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert doctor.triton_mode(has_cuda=True).startswith("CPU interpreter (TRITON_INTERPRET=1")
    monkeypatch.delenv("TRITON_INTERPRET")
    assert doctor.triton_mode(has_cuda=True) == "compiled for the GPU"
    assert doctor.triton_mode(has_cuda=False).startswith("CPU interpreter: no GPU")
    monkeypatch.setattr(doctor, "version", lambda name: "not installed")
    assert doctor.triton_mode(has_cuda=True).startswith("unavailable")


def test_doctor_widget_extension_missing(monkeypatch, tmp_path):
    import jupyter_core.paths

    monkeypatch.setattr(jupyter_core.paths, "jupyter_path", lambda *a: [str(tmp_path)])
    assert doctor.widget_extension().startswith("missing")
    ext = tmp_path / "@jupyter-widgets" / "jupyterlab-manager"
    ext.mkdir(parents=True)
    (ext / "package.json").write_text("{}")
    assert doctor.widget_extension().startswith("installed")


def test_console_script_runs():
    res = subprocess.run([sys.executable, "-m", "attn_course.cli", "doctor"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "attn-course doctor" in res.stdout


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit) as info:
        main(["nope"])
    assert info.value.code == 2


@pytest.mark.parametrize(("triton_v", "numpy_v", "conflict"), [
    ("3.6.0", "2.4.6", True), ("3.6.0", "2.4.0rc1", True), ("3.3.1", "2.10.0", True),
    ("3.6.0", "2.3.5", False), ("3.7.0", "2.4.6", False), ("3.10.0", "2.4.6", False),
    ("not installed", "2.4.6", False),
])
def test_interpreter_conflict_versions(triton_v, numpy_v, conflict):
    msg = doctor.interpreter_conflict(triton_v, numpy_v)
    assert (msg is not None) == conflict, msg
    if conflict:
        assert triton_v in msg
        assert numpy_v in msg
        assert "triton>=3.7" in msg


def test_doctor_warns_of_the_interpreter_conflict(monkeypatch):
    versions = {"triton": "3.6.0", "numpy": "2.4.6"}
    monkeypatch.setattr(doctor, "version", lambda name: versions.get(name, "1.0"))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "WARNING: triton 3.6.0's CPU interpreter" in doctor.triton_report(has_cuda=False)
    assert "WARNING" not in doctor.triton_report(has_cuda=True)  # compiled: no conflict
    versions["triton"] = "3.9.0"
    assert "WARNING" not in doctor.triton_report(has_cuda=False)
