"""A minimal WebSocket client that only counts frames, for measuring a server's send rate.

``python -m bench._wscount URL SUBSCRIBE_JSON|@FILE WARM_S MEASURE_S [HEADERS_JSON]``: connects,
sends each command of the SUBSCRIBE_JSON list, discards ``WARM_S`` seconds of frames (snapshot
burst, ramp-up), then counts whole frames for ``MEASURE_S`` seconds and prints
``{"count", "t0", "t1", "cpu_s", "bytes"}`` (``t0``/``t1`` are CLOCK_MONOTONIC, shared by every
process, so the server can take its own CPU over the same window).

It parses only frame headers (server frames are unmasked), on a blocking socket with large
reads: ~1 µs per frame, several times cheaper than a full client, so the server is what is
measured. Pings are answered so the server keeps the connection.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import sys
import time
from urllib.parse import urlsplit


def _masked(payload: bytes, opcode: int = 0x1) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


def connect(url: str, headers: dict[str, str]) -> tuple[socket.socket, bytes]:
    u = urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port or 80))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    key = base64.b64encode(os.urandom(16)).decode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    req = (f"GET {u.path or '/'} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
           f"{extra}\r\n")
    sock.sendall(req.encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed during handshake")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    return sock, rest


def count(sock: socket.socket, buf: bytes, seconds: float, stop_at: float | None = None
          ) -> tuple[int, int, bytes]:
    """Count complete data frames for ``seconds``; returns (frames, bytes, leftover)."""
    deadline = time.monotonic() + seconds
    frames = 0
    nbytes = 0
    view = bytearray(buf)
    pos = 0
    sock.settimeout(0.2)
    while True:
        # parse every complete frame in the buffer
        n = len(view)
        while n - pos >= 2:
            b1 = view[pos + 1] & 0x7F
            op = view[pos] & 0x0F
            hl = 2
            if b1 == 126:
                if n - pos < 4:
                    break
                ln = (view[pos + 2] << 8) | view[pos + 3]
                hl = 4
            elif b1 == 127:
                if n - pos < 10:
                    break
                ln = int.from_bytes(view[pos + 2:pos + 10], "big")
                hl = 10
            else:
                ln = b1
            end = pos + hl + ln
            if end > n:
                break
            if op == 0x9:  # ping -> pong
                sock.sendall(_masked(bytes(view[pos + hl:end]), 0xA))
            elif op == 0x8:
                raise ConnectionError("server closed the connection")
            elif op in (0x1, 0x2):
                frames += 1
                nbytes += ln
            pos = end
        if pos:
            del view[:pos]
            pos = 0
        if time.monotonic() >= deadline:
            return frames, nbytes, bytes(view)
        try:
            chunk = sock.recv(1 << 20)
        except TimeoutError:
            continue
        if not chunk:
            raise ConnectionError("connection closed")
        view += chunk


def main() -> None:
    spec = sys.argv[2]
    if spec.startswith("@"):  # a long market list does not fit in one argv string (128 kB)
        with open(spec[1:]) as f:
            spec = f.read()
    url, subs, warm, measure = sys.argv[1], json.loads(spec), float(sys.argv[3]), float(sys.argv[4])
    headers = json.loads(sys.argv[5]) if len(sys.argv) > 5 else {}
    sock, rest = connect(url, headers)
    for cmd in subs:
        sock.sendall(_masked(json.dumps(cmd).encode()))
    _, _, rest = count(sock, rest, warm)
    c0, t0 = time.process_time(), time.monotonic()
    frames, nbytes, _ = count(sock, rest, measure)
    t1, c1 = time.monotonic(), time.process_time()
    print(json.dumps({"count": frames, "t0": t0, "t1": t1, "cpu_s": c1 - c0, "bytes": nbytes}),
          flush=True)
    sock.close()


if __name__ == "__main__":
    main()
