"""Send an oversize request the way an attacker would, and measure what it cost the server.

`send` writes a request over a raw socket — the body announced with `Content-Length` or sent
chunked — and reads the answer while it is still sending, so it can tell how much of the body was
on the wire when the server answered (`Sent.body_bytes`). A server that answers before reading the
body answers after what the sockets' buffers hold (a few MiB on loopback at most); one that reads
everything first answers after all of it.

`PeakRSS` measures a process's peak resident memory over a block (this one by default, where the
gateways under test run in threads; or a server's pid): Linux resets the peak when "5" is written
to /proc/<pid>/clear_refs.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


@dataclass
class Sent:
    status: int
    headers: dict[str, str]
    body: bytes
    body_bytes: int  # how much of the body was sent when the answer arrived
    seconds: float  # from the first byte sent to the whole answer read

    def json(self) -> Any:
        return json.loads(self.body)


def send(
    url: str,
    path: str,
    body: Iterable[bytes],
    *,
    length: int | None,
    method: str = "POST",
    headers: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> Sent:
    """POST `body` (an iterable of chunks) to `url` + `path`; `length`: the Content-Length to announce,
    or None for chunked transfer. Stops sending as soon as the answer is complete."""
    host, port = url.removeprefix("http://").split(":")
    head = {"Host": f"{host}:{port}", "Content-Type": "application/json", **(headers or {})}
    head["Content-Length" if length is not None else "Transfer-Encoding"] = (
        str(length) if length is not None else "chunked"
    )
    request = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n"
    sock = socket.create_connection((host, int(port)), timeout=timeout_s)
    sock.setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024
    )  # in flight: little beyond what the server took
    sock.setblocking(False)
    t0 = time.perf_counter()
    deadline = t0 + timeout_s
    received = bytearray()
    pending = bytearray(request.encode())
    chunks = _framed(body, chunked=length is None)
    sent_body = 0
    body_done = False
    try:
        while True:
            if _complete(received):
                break
            if time.perf_counter() > deadline:
                raise TimeoutError(f"no complete answer in {timeout_s} s ({sent_body} body bytes sent)")
            if not pending and not body_done:
                try:
                    piece, size = next(chunks)
                    pending += piece
                    sent_body += size
                except StopIteration:
                    body_done = True
            writable = [sock] if pending else []
            readable, can_write, _ = select.select([sock], writable, [], 0.5)
            if readable:
                data = sock.recv(1 << 16)
                if not data:
                    break
                received += data
                continue
            if can_write:
                try:
                    n = sock.send(pending)
                except (BrokenPipeError, ConnectionResetError):
                    pending.clear()
                    body_done = True
                    continue
                del pending[:n]
    finally:
        sock.close()
    seconds = time.perf_counter() - t0
    status, headers, payload = _parse(bytes(received))
    return Sent(status, headers, payload, sent_body - len(pending), seconds)


def repeated(
    prefix: bytes, item: bytes, count: int, suffix: bytes, *, chunk: int = 64 * 1024
) -> tuple[Iterator[bytes], int]:
    """`prefix + item * count + suffix` as chunks made on the fly (never whole in memory), and its length."""
    per_chunk = max(1, chunk // max(1, len(item)))

    def chunks() -> Iterator[bytes]:
        yield prefix
        left = count
        while left > 0:
            n = min(per_chunk, left)
            yield item * n
            left -= n
        yield suffix

    return chunks(), len(prefix) + len(item) * count + len(suffix)


class PeakRSS:
    """`with PeakRSS() as peak: ...` then `peak.grew_mib`: how far the peak rose above the start."""

    def __init__(self, pid: int | str = "self"):
        self.proc = Path(f"/proc/{pid}")

    def __enter__(self) -> PeakRSS:
        (self.proc / "clear_refs").write_text("5")
        self.start_kib = self._kib("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak_kib = self._kib("VmHWM")

    @property
    def grew_mib(self) -> float:
        return (self.peak_kib - self.start_kib) / 1024

    def _kib(self, field: str) -> int:
        for line in (self.proc / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise RuntimeError(f"{field} not in {self.proc}/status")


# --- helpers -------------------------------------------------------------------------------------


def _framed(body: Iterable[bytes], *, chunked: bool) -> Iterator[tuple[bytes, int]]:
    for piece in body:
        if not piece:
            continue
        yield (f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece), len(piece)
    if chunked:
        yield b"0\r\n\r\n", 0


def _complete(data: bytearray) -> bool:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return False
    _, headers, _ = _parse(bytes(data[: end + 4]))
    length = int(headers.get("content-length", "0"))
    return len(data) >= end + 4 + length


def _parse(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0] else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, payload
