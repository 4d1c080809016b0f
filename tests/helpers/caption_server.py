"""A caption server that never answers: it accepts connections, reads and counts each HTTP request, and holds
the connection open without a reply (a GPT endpoint that hangs). Point ``OPENAI_BASE_URL`` at :attr:`url`."""

from __future__ import annotations

import socket
import threading


class SilentCaptionServer:
    """Counts the requests sent to it (one per request line read) and answers none; a context manager."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.requests = 0
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/v1"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn = self._listener.accept()[0]
            except OSError:
                continue
            self._held.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        seen, counted = b"", 0
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            seen += chunk
            # one request line per request sent on this connection (a client retrying on a new one counts again)
            lines = seen.count(b" HTTP/1.1\r\n")
            with self._lock:
                self.requests += lines - counted
            counted = lines

    def __enter__(self) -> SilentCaptionServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for conn in self._held:
            conn.close()
        self._listener.close()
