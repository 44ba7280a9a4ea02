"""HTTP/1.1 over a plain socket: any header, any byte, duplicated headers, chunked bodies.

httpx (rightly) refuses to send most of what an attacker would; these helpers send exactly the
bytes they are given and read whatever comes back.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

Header = tuple[bytes, bytes]


@dataclass
class RawResponse:
    """A response as read off the wire (status 0: the server answered nothing)."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first header of this name (case-insensitive), or None."""
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def _head(method: str, path: str, headers: Sequence[Header], host: bytes | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode()]
    if host is not None:
        lines.append(b"Host: " + host)
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def request(
    url: str,
    method: str,
    path: str,
    headers: Sequence[Header] = (),
    body: bytes | None = None,
    *,
    host: bytes | None = b"127.0.0.1",
    timeout: float = 60,
) -> RawResponse:
    """Send one request exactly as given (Content-Length added for a body) and read the answer."""
    sent = list(headers)
    if body is not None and not any(name.lower() == b"content-length" for name, _ in sent):
        sent.append((b"Content-Length", str(len(body)).encode()))
    with socket.create_connection(_address(url), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the server may answer and close before reading it all
            sock.sendall(_head(method, path, sent, host) + (body or b""))
        return _read(sock)


def stream(
    url: str,
    path: str,
    headers: Sequence[Header],
    chunks: Iterable[bytes],
    *,
    timeout: float = 120,
) -> tuple[RawResponse, int]:
    """POST with Transfer-Encoding: chunked while reading the answer; (answer, body bytes sent).

    Sending stops when the server closes: an early answer is read, not lost.
    """
    head = _head("POST", path, [*headers, (b"Transfer-Encoding", b"chunked")], b"127.0.0.1")
    with socket.create_connection(_address(url), timeout=timeout) as sock:
        answer: list[RawResponse] = []
        reader = threading.Thread(target=lambda: answer.append(_read(sock)), daemon=True)
        reader.start()
        sent = 0
        try:
            sock.sendall(head)
            for chunk in chunks:
                if not reader.is_alive():
                    break  # answered and closed: nothing more is wanted
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed while we sent: its answer is what counts
        reader.join(timeout)
        return (answer[0] if answer else RawResponse(0)), sent


def _read(sock: socket.socket) -> RawResponse:
    """Read one response: to the end of its body, or of its headers for an event stream."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
        head, _, rest = data.partition(b"\r\n\r\n")
        response = _parse_head(head)
        if response.status == 0 or (response.header("content-type") or "").startswith("text/event-stream"):
            return response
        length = response.header("content-length")
        while length is None or len(rest) < int(length):
            piece = sock.recv(65536)
            if not piece:
                break
            rest += piece
    except (ConnectionResetError, TimeoutError):
        head, _, rest = data.partition(b"\r\n\r\n")
        response = _parse_head(head)
    if (response.header("transfer-encoding") or "").lower() == "chunked":
        rest = _dechunk(rest)
    response.body = rest
    return response


def _parse_head(head: bytes) -> RawResponse:
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return RawResponse(0)
    pairs = [line.split(":", 1) for line in lines[1:] if ":" in line]
    return RawResponse(status, [(name.strip(), value.strip()) for name, value in pairs])


def _dechunk(data: bytes) -> bytes:
    body = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        body, data = body + data[:size], data[size + 2 :]
    return body


def multipart(
    parts: Sequence[tuple[bytes, bytes | None, bytes]], boundary: bytes = b"alchemist-raw"
) -> tuple[Header, bytes]:
    """(Content-Type header, body) for parts of (name, filename or None for a field, data).

    Names and filenames go into the part header as they are: no escaping, no encoding.
    """
    body = b""
    for name, filename, data in parts:
        disposition = b'form-data; name="' + name + b'"'
        if filename is not None:
            disposition += b'; filename="' + filename + b'"'
        body += b"--" + boundary + b"\r\nContent-Disposition: " + disposition + b"\r\n"
        if filename is not None:
            body += b"Content-Type: video/mp4\r\n"
        body += b"\r\n" + data + b"\r\n"
    body += b"--" + boundary + b"--\r\n"
    return (b"Content-Type", b"multipart/form-data; boundary=" + boundary), body
