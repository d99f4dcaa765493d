"""What crosses between the two stages, and how the trusted side reads it: the result frames on
the sandbox's stdout, and plain JSON for values (hidden inputs in, returned values and weights
back).

The runner writes frames (:class:`Frames`, inside the sandbox)::

    NBLIB-FRAME <nonce> <number of bytes>\\n<JSON payload>\\n

and the grader treats everything that left a sandbox as hostile data: frames are parsed strictly
(nonce, lengths, size limits, no duplicate keys, bounded nesting), values are rebuilt from plain
JSON into genuine built-in types (a float subclass or an always-equal object cannot exist here)
and tensors from their values, element counts checked before anything is allocated; no pickle or
zip is ever opened. Imports no torch at module level (the runner imports this inside the sandbox).
Serves the README's "Exercises and grading (instructors)" section (*Only plain values come back, to
a separate trusted process*; returning always-equal objects gains nothing) and docs/grading.md
"How it is built". Introduced for the graded exercises of the lessons.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

FRAME_TAG = b"NBLIB-FRAME"
MAX_JSON_DEPTH = 200
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")
TENSOR_DTYPES = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16",
                 "float32", "float64")
MAX_TENSOR_ELEMENTS = 10**7


class UntrustedDataError(ValueError):
    """Something that came out of a sandbox is not what an honest runner would send."""


# ---------------------------------------------------------------- strict parsing
def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise UntrustedDataError("duplicate key")
        result[key] = value
    return result


def _constant(name: str) -> float:
    return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]


def strict_json(text: str | bytes, max_bytes: int) -> Any:
    """Parse untrusted JSON: size limit, bounded nesting, no duplicate keys."""
    if len(text) > max_bytes:
        raise UntrustedDataError("too large")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise UntrustedDataError("not UTF-8") from None
    depth = 0
    skeleton = _JSON_STRING.sub('""', text)  # brackets inside strings do not nest
    for bracket in _JSON_BRACKET.finditer(skeleton):  # json itself recurses without a useful limit
        depth += 1 if bracket.group() in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise UntrustedDataError("nested too deeply")
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_constant)
    except (ValueError, RecursionError) as err:
        raise UntrustedDataError(f"not valid JSON ({type(err).__name__})") from None


def parse_frames(data: bytes, nonce: str, max_frame: int) -> tuple[list[dict], str | None]:
    """Split the runner's stdout into frames; stop at the first thing that is not a frame."""
    header = FRAME_TAG + b" " + nonce.encode("ascii") + b" "
    frames: list[dict] = []
    pos = 0
    while pos < len(data):
        if not data.startswith(header, pos):
            return frames, "unexpected bytes on the result pipe"
        start = pos + len(header)
        end = data.find(b"\n", start, start + 16)
        digits = data[start:end] if end != -1 else b""
        if not digits.isdigit():
            return frames, "malformed frame header"
        size = int(digits)
        body = data[end + 1: end + 1 + size]
        if size > max_frame or len(body) < size or data[end + 1 + size: end + 2 + size] != b"\n":
            return frames, "truncated or oversized frame"
        try:
            frame = strict_json(body, max_frame)
        except UntrustedDataError as err:
            return frames, f"bad frame: {err}"
        if type(frame) is not dict or type(frame.get("type")) is not str:
            return frames, "bad frame"
        frames.append(frame)
        pos = end + 2 + size
    return frames, None


def decode_value(obj: Any, budget: list[int] | None = None) -> Any:
    """Rebuild a returned value from plain JSON as genuine built-in values and tensors."""
    import torch

    budget = budget if budget is not None else [MAX_TENSOR_ELEMENTS]
    budget[0] -= 1
    if budget[0] < 0:
        raise UntrustedDataError("too many elements")
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if type(obj) is list:
        return [decode_value(v, budget) for v in obj]
    if type(obj) is not dict or len(obj) != 1:
        raise UntrustedDataError("not plain data")
    (tag, payload), = obj.items()
    if tag == "__dict__":
        if type(payload) is not list:
            raise UntrustedDataError("bad dict")
        result = {}
        for pair in payload:
            if type(pair) is not list or len(pair) != 2:
                raise UntrustedDataError("bad dict")
            key = decode_value(pair[0], budget)
            if not (key is None or type(key) in (bool, int, float, str)) or key in result:
                raise UntrustedDataError("bad dict key")
            result[key] = decode_value(pair[1], budget)
        return result
    if tag == "__tensor__":
        if type(payload) is not dict or set(payload) != {"dtype", "shape", "values"}:
            raise UntrustedDataError("bad tensor")
        dtype, shape, values = payload["dtype"], payload["shape"], payload["values"]
        if dtype not in TENSOR_DTYPES or type(shape) is not list or len(shape) > 8:
            raise UntrustedDataError("bad tensor")
        if not all(type(s) is int and 0 <= s for s in shape):
            raise UntrustedDataError("bad tensor shape")
        numel = math.prod(shape)
        budget[0] -= numel
        if budget[0] < 0:
            raise UntrustedDataError("tensor too large")
        _check_numbers(values, len(shape))
        try:
            tensor = torch.tensor(values, dtype=getattr(torch, dtype))
        except (TypeError, ValueError, RuntimeError, OverflowError):
            raise UntrustedDataError("bad tensor values") from None
        if list(tensor.shape) != shape:
            if numel != 0 or tensor.numel() != 0:
                raise UntrustedDataError("tensor values do not match its shape")
            tensor = tensor.reshape(shape)  # torch.tensor([]) is (0,), the shape may be (0, 4)
        return tensor
    raise UntrustedDataError("not plain data")


def _check_numbers(values: Any, depth: int) -> None:
    if depth == 0:
        if type(values) not in (bool, int, float):
            raise UntrustedDataError("tensor values must be numbers")
        return
    if type(values) is not list:
        raise UntrustedDataError("bad tensor nesting")
    for v in values:
        _check_numbers(v, depth - 1)


def decode_weights(obj: Any, budget: list[int] | None = None) -> dict[str, Any]:
    """A state dict sent back as plain data: ``{"__weights__": <dict of name -> tensor>}``.

    Rebuilt by :func:`decode_value` (exact types, element counts checked before anything is
    allocated): no pickle and no zip are ever opened on the trusted side, so a few bytes cannot
    inflate into gigabytes here.
    """
    import torch

    if type(obj) is not dict or set(obj) != {"__weights__"}:
        raise UntrustedDataError("not a state dict")
    state = decode_value(obj["__weights__"], budget)
    if type(state) is not dict:
        raise UntrustedDataError("not a state dict")
    for key, value in state.items():
        if type(key) is not str or type(value) is not torch.Tensor:
            raise UntrustedDataError("a state dict holds only named tensors")
    return state


# ---------------------------------------------------------------- encoding hidden inputs
def encode_input(value: Any) -> Any:
    """A hidden input as plain JSON for the runner (trusted side; tensors by value)."""
    import torch

    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) in (list, tuple):
        return [encode_input(v) for v in value]
    if type(value) is dict:
        return {"__dict__": [[encode_input(k), encode_input(v)] for k, v in value.items()]}
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).replace("torch.", "")
        if dtype not in TENSOR_DTYPES:
            raise TypeError(f"hidden input tensor of unsupported dtype {value.dtype}")
        return {"__tensor__": {"dtype": dtype, "shape": list(value.shape),
                               "values": value.detach().cpu().tolist()}}
    raise TypeError(f"a hidden input must be plain data or a tensor, got {type(value).__name__}")


class Frames:
    """Writes length-prefixed JSON frames on the private copy of stdout."""

    def __init__(self, fd: int, nonce: str) -> None:
        self.fd = fd
        self.header = FRAME_TAG + b" " + nonce.encode("ascii") + b" "

    def emit(self, payload: dict[str, Any]) -> None:
        body = json.dumps(payload, allow_nan=True).encode("utf-8")
        data = self.header + str(len(body)).encode("ascii") + b"\n" + body + b"\n"
        view = memoryview(data)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]
