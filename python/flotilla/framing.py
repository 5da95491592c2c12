"""Frames of the ex-process protocol (docs/client-protocol.md).

    0   4  magic "FLT1"
    4   4  uint32 LE: J, length of the JSON control part
    8   8  uint64 LE: P, length of the payload (0 if none)
    16  J  UTF-8 JSON control message (always has "type")
    16+J P payload: safetensors bytes

Writes hand every buffer to ``sendmsg`` (tensors are never concatenated);
reads land the payload in one ``bytearray`` so tensors can view it writable.
"""
from __future__ import annotations

import json
import math
import socket
import struct
from typing import Any, Sequence

from .errors import ConnectionClosedError, ProtocolError

MAGIC = b"FLT1"
PREFIX = struct.Struct("<4sIQ")
MAX_CONTROL_BYTES = 16 * 1024 * 1024
#: buffers per sendmsg call (Linux IOV_MAX is 1024)
_IOV_BATCH = 512


def _non_finite(value: Any, path: str) -> list[tuple[str, float]]:
    """Where in a message NaN or Infinity sits, as dotted paths (model.metrics.loss)."""
    if isinstance(value, float) and not math.isfinite(value):
        return [(path or "value", value)]
    if isinstance(value, dict):
        return [hit for k, v in value.items() for hit in _non_finite(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, (list, tuple)):
        return [hit for i, v in enumerate(value) for hit in _non_finite(v, f"{path}[{i}]")]
    return []


def encode_control(control: dict[str, Any]) -> bytes:
    if not isinstance(control.get("type"), str):
        raise ProtocolError(f"control message needs a string 'type', got {control!r}")
    try:
        body = json.dumps(control, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except ValueError as e:
        bad = ", ".join(f"{path} is {value}" for path, value in _non_finite(control, "")) or str(e)
        raise ProtocolError(
            f"{control['type']} message has values that are not finite numbers ({bad}): JSON cannot carry NaN or Infinity; "
            "check the training (a diverging loss?) or leave them out"
        ) from None
    if len(body) > MAX_CONTROL_BYTES:
        raise ProtocolError(f"{control['type']} control part is {len(body)} bytes, over the {MAX_CONTROL_BYTES}-byte limit")
    return body


def write_frame(sock: socket.socket, control: dict[str, Any], payload: Sequence[Any] = (), payload_len: int | None = None) -> None:
    """Sends one frame; ``payload`` is a list of buffers whose bytes are sent in order, uncopied."""
    body = encode_control(control)
    parts = [memoryview(p).cast("B") for p in payload]
    plen = sum(p.nbytes for p in parts)
    if payload_len is not None and payload_len != plen:
        raise ProtocolError(f"payload is {plen} bytes, expected {payload_len}")
    send_all(sock, [PREFIX.pack(MAGIC, len(body), plen) + body, *parts])


def send_all(sock: socket.socket, buffers: list[Any]) -> None:
    """sendmsg until every byte is out, resuming after partial writes."""
    bufs = [memoryview(b).cast("B") for b in buffers if memoryview(b).nbytes]
    i = 0
    while i < len(bufs):
        sent = sock.sendmsg(bufs[i : i + _IOV_BATCH])
        while sent > 0:
            n = bufs[i].nbytes
            if sent >= n:
                sent -= n
                i += 1
            else:
                bufs[i] = bufs[i][sent:]
                sent = 0


def recv_exact(sock: socket.socket, n: int, what: str) -> bytearray:
    buf = bytearray(n)
    mv = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(mv[got:], n - got)
        if k == 0:
            if got == 0 and what == "frame header":
                raise ConnectionClosedError("the Flotilla client closed the connection")
            raise ConnectionClosedError(f"the Flotilla client closed the connection in the middle of a {what} ({got} of {n} bytes)")
        got += k
    return buf


def read_frame(sock: socket.socket) -> tuple[dict[str, Any], bytearray | None]:
    """One frame: the control message and the payload (None when P is 0)."""
    magic, jlen, plen = PREFIX.unpack(recv_exact(sock, PREFIX.size, "frame header"))
    if magic != MAGIC:
        raise ProtocolError(f"bad frame magic {bytes(magic)!r}, expected {MAGIC!r}: is FLOTILLA_SOCKET a Flotilla client socket?")
    if jlen > MAX_CONTROL_BYTES:
        raise ProtocolError(f"control part of {jlen} bytes is over the {MAX_CONTROL_BYTES}-byte limit")
    raw = recv_exact(sock, jlen, "control message")
    try:
        control = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"control message is not valid JSON: {e}") from None
    if not isinstance(control, dict) or not isinstance(control.get("type"), str):
        raise ProtocolError(f"control message must be an object with a string 'type', got {raw[:200].decode('utf-8', 'replace')}")
    payload = recv_exact(sock, plen, f"{control['type']} payload") if plen else None
    return control, payload
