"""The pieces of the grader's trust boundary: what may cross the pipe, how a test cell is
split into its visible and hidden parts, and when the grader refuses to run learners' code."""

from __future__ import annotations

import base64
import math

import numpy as np
import pytest
import torch

from attn_course.grading import isolation, wire
from attn_course.grading.grader import resolve_isolation
from attn_course.grading.sandbox import Limits
from attn_course.grading.worker import split_hidden


@pytest.mark.parametrize("value", [
    None, True, 3, -2**70, 2.5, float("inf"), 1 + 2j, "text", [1, [2, 3]], (1, "a"),
    {"a": 1, 2: "b"}, range(2, 9, 3), np.float64(1.5), np.int32(7),
    np.arange(6, dtype=np.float32).reshape(2, 3), np.array(3.0), np.zeros((0, 4), dtype=bool),
    np.array([1 + 1j], dtype=np.complex64), np.arange(4.0)[::2],
])
def test_plain_data_round_trips(value):
    back = wire.decode(wire.encode(value))
    if isinstance(value, np.ndarray):
        assert back.dtype == value.dtype
        assert back.shape == value.shape
        assert np.array_equal(back, value)
    elif isinstance(value, np.generic):
        assert type(back) is type(value)
        assert back == value
    else:
        assert back == value
        assert type(back) is type(value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16,
                                   torch.int64, torch.bool, torch.complex64])
def test_tensors_round_trip_with_dtype_and_grad_flag(dtype):
    t = (torch.arange(6) % 2 == 0) if dtype == torch.bool else torch.arange(6).to(dtype)
    t = t.reshape(2, 3)
    if dtype.is_floating_point:
        t.requires_grad_(True)
    back = wire.decode(wire.encode(t))
    assert back.dtype == dtype
    assert back.shape == t.shape
    assert torch.equal(back.detach(), t.detach())
    assert back.requires_grad == t.requires_grad


def test_nan_survives():
    assert math.isnan(wire.decode(wire.encode(float("nan"))))


@pytest.mark.parametrize("value", [object(), np.array([object()], dtype=object), print,
                                   type("X", (), {})(), {1: object()}])
def test_anything_else_is_not_plain_data(value):
    with pytest.raises(wire.Unencodable):
        wire.encode(value)


@pytest.mark.parametrize("bad", [
    {"__pickle__": "x"},
    {"__ndarray__": "|O", "shape": [1], "data": ""},
    {"__ndarray__": "<f8", "shape": [3], "data": base64.b64encode(b"x" * 8).decode()},
    {"__ndarray__": "<f8", "shape": [-1], "data": ""},
    {"__tensor__": "qint8", "shape": [1], "data": ""},
    {"__float__": "__import__('os')"},
    {"__dict__": [[[1], 2]]},
    {"__npscalar__": {"__ndarray__": "<f8", "shape": [2],
                      "data": base64.b64encode(b"x" * 16).decode()}},
    3j.__class__,
])
def test_malformed_data_is_refused(bad):
    with pytest.raises((wire.ProtocolError, TypeError)):
        wire.decode(bad)


def test_deep_nesting_is_refused():
    deep: list = []
    for _ in range(100):
        deep = [deep]
    with pytest.raises(wire.Unencodable):
        wire.encode(deep)
    raw = []
    for _ in range(100):
        raw = [raw]
    with pytest.raises(wire.ProtocolError):
        wire.decode(raw)


def test_frames_refuse_oversized_messages(tmp_path):
    import os

    r, w = os.pipe()
    wire.send(w, {"x": "y" * 1000})
    with pytest.raises(wire.ProtocolError, match="limit"):
        wire.receive(r, limit=100)
    os.close(r)
    os.close(w)


def test_split_hidden_keeps_line_numbers_and_order():
    src = "a = 1\n### BEGIN HIDDEN TESTS\nb = 2\n### END HIDDEN TESTS\nc = 3"
    parts = split_hidden(src)
    assert [h for _, h in parts] == [False, True, False]
    assert [p.split("\n").index(x) for (p, _), x in zip(parts, ("a = 1", "b = 2", "c = 3"),
                                                         strict=True)] == [0, 2, 4]


def test_split_hidden_inside_a_block_hides_the_whole_cell():
    src = "if True:\n    a = 1\n    ### BEGIN HIDDEN TESTS\n    b = 2\n    ### END HIDDEN TESTS"
    assert split_hidden(src) == [(src, True)]


def test_grading_without_a_sandbox_is_refused_unless_trusted(monkeypatch):
    monkeypatch.setattr(isolation, "detect", lambda: isolation.Isolation("none", "nothing here"))
    monkeypatch.delenv("ATTN_COURSE_NO_SANDBOX", raising=False)
    with pytest.raises(ValueError, match="--no-sandbox"):
        resolve_isolation(Limits())
    assert resolve_isolation(Limits(trusted=True)).isolation == "none"
    with pytest.raises(ValueError, match="isolation must be one of"):
        resolve_isolation(Limits(isolation="chroot"))


def test_user_mode_requires_private_sources(tmp_path):
    src = tmp_path / "solutions"
    src.mkdir()
    src.chmod(0o755)
    with pytest.raises(PermissionError, match="chmod -R go-rwx"):
        isolation.require_private([src], "user")
    src.chmod(0o700)
    isolation.require_private([src], "user")
    isolation.require_private([tmp_path], "bwrap")  # the sandbox cannot see it anyway


def test_bubblewrap_view_leaves_out_the_course_sources():
    args = isolation._bwrap_args()
    binds = {args[i + 1] for i, a in enumerate(args) if a == "--ro-bind"}
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    assert f"{root}/attn_course" in binds or not any(b.startswith(root) for b in binds)
    assert root not in binds
    assert f"{root}/solutions" not in binds
    assert "--unshare-all" in args
    assert "--die-with-parent" in args
