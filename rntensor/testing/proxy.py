"""A loopback TCP proxy that adds latency per HTTP request and injects faults."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import re
import socket
import struct
import threading
from typing import Any, Literal

from rntensor.testing._net import LOOPBACK, _check_loopback

__all__ = ["FailMode", "LatencyProxy"]

FailMode = Literal["reset", "503"]
_REQUEST_LINE = re.compile(rb"^[A-Z]+ \S+ HTTP/1\.[01]\r\n")
_METHOD = re.compile(rb"^[A-Z]{1,16}( |$)")
_MAX_HEAD = 64 * 1024


class _Fault(Exception):
    pass


class LatencyProxy:
    """A loopback TCP proxy that delays every HTTP request and can inject faults.

    Requests are framed on the client side (``Content-Length`` bodies, keep-alive), so the
    delay and the fault counter are per request, not per connection; non-HTTP traffic is
    delayed per chunk.  ``latency_s``, ``fail_every`` and ``fail_mode`` may be changed while
    it runs.  Counters: ``connections``, ``requests``, ``faults``.

    Args:
        upstream_host: the server to forward to; loopback only.
        upstream_port: its port.
        latency_s: delay before each request is forwarded (one extra round trip's worth).
        fail_every: fail every Nth request (N, 2N, ...); None never fails.
        fail_mode: ``"reset"`` closes the connection with a TCP RST, ``"503"`` answers
            ``503 Service Unavailable`` (S3 ``SlowDown``) and closes; None never fails.
        max_lifetime_s: the proxy stops after this long, whatever happens.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        *,
        latency_s: float = 0.05,
        fail_every: int | None = None,
        fail_mode: FailMode | None = "reset",
        max_lifetime_s: float = 3600.0,
    ) -> None:
        _check_loopback(upstream_host)
        if latency_s < 0:
            raise ValueError(f"latency_s must be >= 0, got {latency_s!r}")
        if fail_every is not None and fail_every < 1:
            raise ValueError(f"fail_every must be a positive integer or None, got {fail_every!r}")
        if fail_mode not in ("reset", "503", None):
            raise ValueError(f"fail_mode must be 'reset', '503' or None, got {fail_mode!r}")
        self.upstream = (upstream_host, int(upstream_port))
        self.latency_s = float(latency_s)
        self.fail_every = fail_every
        self.fail_mode: FailMode | None = fail_mode
        self.max_lifetime_s = float(max_lifetime_s)
        self.connections = self.requests = self.faults = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    @classmethod
    def from_url(cls, endpoint_url: str, **kwargs: Any) -> LatencyProxy:
        """A proxy in front of ``http://127.0.0.1:PORT`` (a server's ``endpoint_url``)."""
        from urllib.parse import urlsplit

        parts = urlsplit(endpoint_url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"expected http://127.0.0.1:PORT, got {endpoint_url!r}")
        return cls(parts.hostname, parts.port, **kwargs)

    @property
    def endpoint_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def __enter__(self) -> LatencyProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        if self._thread is not None:
            return
        ready = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main(ready)), name="LatencyProxy", daemon=True
        )
        self._thread.start()
        if not ready.wait(10) or not self.port:
            self.stop()
            raise RuntimeError("LatencyProxy did not start within 10 s")
        atexit.register(self.stop)

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        atexit.unregister(self.stop)
        if thread is None:
            return
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)

    async def _main(self, ready: threading.Event) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        tasks: set[asyncio.Task[None]] = set()

        def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            task = asyncio.ensure_future(self._serve(r, w))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        try:
            server = await asyncio.start_server(on_client, LOOPBACK, 0)
        except OSError:
            ready.set()
            return
        self.port = int(server.sockets[0].getsockname()[1])
        ready.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), self.max_lifetime_s)
        server.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    def _count_request(self) -> bool:
        """Count a request; True when it must fail."""
        self.requests += 1
        every, mode = self.fail_every, self.fail_mode
        if every and mode and self.requests % every == 0:
            self.faults += 1
            return True
        return False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_w: asyncio.StreamWriter | None = None
        try:
            up_r, up = await asyncio.wait_for(asyncio.open_connection(*self.upstream), 10)
            up_w = up
            back = asyncio.ensure_future(self._pipe(up_r, writer))
            forth = asyncio.ensure_future(self._forward_requests(reader, writer, up))
            done, _ = await asyncio.wait({back, forth}, return_when=asyncio.FIRST_COMPLETED)
            if forth in done and forth.exception() is None and not back.done():
                with contextlib.suppress(OSError):
                    up.write_eof()  # client finished sending: let the response complete
                await asyncio.wait({back}, timeout=30)
            for t in (back, forth):
                t.cancel()
            await asyncio.gather(back, forth, return_exceptions=True)
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            for w in (writer, up_w):
                if w is not None:
                    w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    async def _forward_requests(
        self, reader: asyncio.StreamReader, client: asyncio.StreamWriter, up: asyncio.StreamWriter
    ) -> None:
        buf = b""
        while True:  # one HTTP request per turn; ends at EOF, on a fault, or when cancelled
            while b"\r\n\r\n" not in buf and len(buf) < _MAX_HEAD:
                data = await reader.read(65536)
                if not data:
                    if buf:
                        up.write(buf)
                        await up.drain()
                    return
                buf += data
                if not _METHOD.match(buf[:17]):
                    break
            if b"\r\n\r\n" not in buf or not _REQUEST_LINE.match(buf):
                await asyncio.sleep(self.latency_s)  # not HTTP: raw mode, delay per chunk
                up.write(buf)
                await up.drain()
                while data := await reader.read(65536):
                    await asyncio.sleep(self.latency_s)
                    up.write(data)
                    await up.drain()
                return
            head, buf = buf.split(b"\r\n\r\n", 1)
            head += b"\r\n\r\n"
            if self._count_request():
                await self._inject(client, head)
                raise _Fault
            await asyncio.sleep(self.latency_s)
            up.write(head)
            low = head.lower()
            if b"transfer-encoding:" in low:  # chunked body: stop framing, stream the rest
                up.write(buf)
                await up.drain()
                await self._pipe(reader, up)
                return
            m = re.search(rb"\r\ncontent-length:\s*(\d+)", low)
            remaining = int(m.group(1)) if m else 0
            body, buf = buf[:remaining], buf[remaining:]
            up.write(body)
            remaining -= len(body)
            await up.drain()
            while remaining > 0:
                data = await reader.read(min(65536, remaining))
                if not data:
                    return
                up.write(data)
                remaining -= len(data)
                await up.drain()

    async def _inject(self, client: asyncio.StreamWriter, head: bytes) -> None:
        if self.fail_mode == "503":
            body = (
                b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
                b"<Message>fault injected by LatencyProxy</Message></Error>"
            )
            client.write(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            )
            if not head.startswith(b"HEAD "):
                client.write(body)
            with contextlib.suppress(OSError):
                await client.drain()
            return
        sock = client.get_extra_info("socket")
        if sock is not None:  # linger 0: close() sends RST instead of FIN
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.transport.abort()
