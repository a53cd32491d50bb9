"""What crosses between the grader's trusted process and the learner's sandboxed one.

Messages are frames on a pipe: an 8-byte big-endian length, then a JSON object. The
two directions differ in what they may carry:

- **grader -> learner**: code to run, and the arguments of calls, pickled (with
  cloudpickle, so that a test's local helper functions travel too). Unpickling runs
  code, which is harmless here: the learner's process runs the learner's code anyway,
  and what it unpickles comes from the grader.
- **learner -> grader**: *plain data only*, never a pickle: ``None``, booleans,
  numbers, strings, lists, tuples and dicts of them, numpy arrays and torch tensors
  of numeric dtypes (their bytes, dtype and shape). :func:`decode` rebuilds them and
  checks every type, dtype and size, so nothing the learner's code returns can run
  code in the grader. Any other object stays in the learner's process and comes back
  as a *handle* (a number) that later requests can refer to.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import struct

MAX_FRAME = 256 << 20  # bytes of one message from the learner's process
MAX_DEPTH = 32  # nesting of lists, tuples and dicts

# numpy dtype strings allowed in either direction (byte order '<' or '|').
NUMPY_DTYPES = ("|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4",
                "<f8", "<c8", "<c16")
TORCH_DTYPES = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16",
                "float32", "float64", "complex64", "complex128")


class ProtocolError(Exception):
    """A malformed or oversized message (from a learner's process that misbehaves)."""


# -- frames ---------------------------------------------------------------------------

def send(fd: int, message: dict) -> None:
    data = json.dumps(message, allow_nan=True).encode()
    view = memoryview(struct.pack(">Q", len(data)) + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the other process closed the pipe")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive(fd: int, limit: int = MAX_FRAME) -> dict:
    (n,) = struct.unpack(">Q", _read_exact(fd, 8))
    if n > limit:
        raise ProtocolError(f"a message of {n} bytes (the limit is {limit})")
    try:
        message = json.loads(_read_exact(fd, n))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"a message that is not JSON ({exc})") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"a message that is a {type(message).__name__}, not an object")
    return message


# -- grader -> learner: pickles ---------------------------------------------------------

def dumps(obj, persistent_id=None) -> str:
    """``obj`` pickled with cloudpickle, as base64 text; ``persistent_id(x)`` may name
    objects that live in the learner's process (see :mod:`attn_course.grading.remote`)."""
    import cloudpickle

    buf = io.BytesIO()
    pickler = cloudpickle.CloudPickler(buf, protocol=5)
    if persistent_id is not None:
        pickler.persistent_id = persistent_id
    pickler.dump(obj)
    return base64.b64encode(buf.getvalue()).decode()


def loads(text: str, persistent_load=None):
    """The inverse of :func:`dumps`; used in the learner's process only."""
    import pickle

    class Unpickler(pickle.Unpickler):
        def persistent_load(self, pid):
            if persistent_load is None:
                raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
            return persistent_load(pid)

    return Unpickler(io.BytesIO(base64.b64decode(text))).load()


# -- learner -> grader: plain data ------------------------------------------------------

class Unencodable(Exception):
    """Raised by :func:`encode` for an object that is not plain data."""


def encode(value, depth: int = 0):
    """``value`` as JSON-able plain data; raises :class:`Unencodable` otherwise."""
    import numpy as np

    if depth > MAX_DEPTH:
        raise Unencodable("nested too deeply")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int) and type(value) in (int,):
        return value if abs(value) < 2**63 else {"__int__": str(value)}
    if isinstance(value, float) and type(value) is float:
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if type(value) is complex:
        return {"__complex__": [encode(value.real), encode(value.imag)]}
    if type(value) in (list, tuple):
        items = [encode(v, depth + 1) for v in value]
        return items if type(value) is list else {"__tuple__": items}
    if type(value) is dict:
        keys = list(value)
        if all(type(k) is str for k in keys):
            return {"__dict__": [[k, encode(value[k], depth + 1)] for k in keys]}
        return {"__dict__": [[encode(k, depth + 1), encode(value[k], depth + 1)] for k in keys]}
    if type(value) is range:
        return {"__range__": [value.start, value.stop, value.step]}
    if isinstance(value, np.generic) and type(value).__module__ == "numpy":
        return {"__npscalar__": encode(np.asarray(value), depth)}
    if type(value) is np.ndarray:
        a = value.copy(order="C")
        dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        if dtype.str not in NUMPY_DTYPES:
            raise Unencodable(f"a numpy array of dtype {value.dtype}")
        a = a.astype(dtype, copy=False)
        return {"__ndarray__": dtype.str, "shape": list(a.shape),
                "data": base64.b64encode(a.tobytes()).decode()}
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and type(value) in (torch.Tensor, torch.nn.Parameter):
        t = torch.Tensor.detach(value).cpu().contiguous()
        name = str(t.dtype).removeprefix("torch.")
        if name not in TORCH_DTYPES:
            raise Unencodable(f"a torch tensor of dtype {t.dtype}")
        raw = t.view(torch.int16) if name == "bfloat16" else t
        data = raw.numpy().tobytes()
        return {"__tensor__": name, "shape": list(t.shape),
                "data": base64.b64encode(data).decode(),
                "requires_grad": bool(value.requires_grad), "grad_fn": value.grad_fn is not None}
    raise Unencodable(f"an object of type {type(value).__module__}.{type(value).__qualname__}")


def decode(obj, depth: int = 0):
    """Rebuild what :func:`encode` made, checking everything; raises
    :class:`ProtocolError` for anything else."""
    import numpy as np

    if depth > MAX_DEPTH + 2:
        raise ProtocolError("data nested too deeply")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, list):
        return [decode(v, depth + 1) for v in obj]
    if not isinstance(obj, dict) or len(obj) == 0:
        raise ProtocolError(f"unexpected data {type(obj).__name__}")
    if "__tuple__" in obj:
        return tuple(decode(v, depth + 1) for v in _list(obj["__tuple__"]))
    if "__dict__" in obj:
        out = {}
        for pair in _list(obj["__dict__"]):
            if not isinstance(pair, list) or len(pair) != 2:
                raise ProtocolError("a malformed dict entry")
            key = decode(pair[0], depth + 1)
            try:
                hash(key)
            except TypeError:
                raise ProtocolError("an unhashable dict key") from None
            out[key] = decode(pair[1], depth + 1)
        return out
    if "__int__" in obj:
        return int(_str(obj["__int__"]))
    if "__float__" in obj:
        text = _str(obj["__float__"])
        if text not in ("nan", "inf", "-inf"):
            raise ProtocolError(f"a float written as {text!r}")
        return float(text)
    if "__complex__" in obj:
        re, im = _list(obj["__complex__"])
        return complex(decode(re, depth + 1), decode(im, depth + 1))
    if "__range__" in obj:
        a, b, c = (int(x) for x in _list(obj["__range__"]))
        return range(a, b, c)
    if "__npscalar__" in obj:
        a = decode(obj["__npscalar__"], depth + 1)
        if not isinstance(a, np.ndarray) or a.ndim != 0:
            raise ProtocolError("a malformed numpy scalar")
        return a[()]
    if "__ndarray__" in obj:
        dtype = _str(obj["__ndarray__"])
        if dtype not in NUMPY_DTYPES:
            raise ProtocolError(f"an array of dtype {dtype!r}")
        return _array(np.dtype(dtype), obj)
    if "__tensor__" in obj:
        import torch

        name = _str(obj["__tensor__"])
        if name not in TORCH_DTYPES:
            raise ProtocolError(f"a tensor of dtype {name!r}")
        raw_dtype = np.dtype("<i2") if name == "bfloat16" else np.dtype(
            str(torch.empty(0, dtype=getattr(torch, name)).numpy().dtype))
        t = torch.from_numpy(_array(raw_dtype, obj).copy())
        if name == "bfloat16":
            t = t.view(torch.bfloat16)
        if obj.get("requires_grad") is True and (t.is_floating_point() or t.is_complex()):
            t.requires_grad_(True)
        return t
    raise ProtocolError(f"unexpected data with keys {sorted(obj)[:5]}")


def _list(x) -> list:
    if not isinstance(x, list):
        raise ProtocolError(f"expected a list, got {type(x).__name__}")
    return x


def _str(x) -> str:
    if not isinstance(x, str):
        raise ProtocolError(f"expected a string, got {type(x).__name__}")
    return x


def _array(dtype, obj):
    import numpy as np

    shape = [int(n) for n in _list(obj.get("shape"))]
    if any(n < 0 for n in shape) or len(shape) > 32:
        raise ProtocolError(f"an array of shape {shape}")
    data = base64.b64decode(_str(obj.get("data")), validate=True)
    if len(data) != math.prod(shape) * dtype.itemsize:
        raise ProtocolError(f"{len(data)} bytes for an array of shape {shape} and dtype {dtype}")
    return np.frombuffer(data, dtype=dtype).reshape(shape).copy()
