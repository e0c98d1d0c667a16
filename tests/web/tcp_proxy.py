"""A TCP proxy on 127.0.0.1 whose open connections the test can cut, as a network drop or a proxy's
idle timeout would (to check that the UI reconnects its event streams), and whose replies it can
slow down (to stop a reply half-way through, whatever the speed of the machine)."""

from __future__ import annotations

import socket
import threading
import time


class TcpProxy:
    def __init__(self, target_port: int):
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._reply_chunk_bytes = 65536
        self._reply_delay_s = 0.0
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    def cut(self) -> int:
        """Close every open connection (both sides); returns how many were cut."""
        with self._lock:
            sockets, self._open = self._open, set()
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its peer
            s.close()
        return len(sockets) // 2

    def slow_replies(self, chunk_bytes: int, delay_s: float) -> None:
        """From now on, pass replies on `chunk_bytes` at a time with `delay_s` between chunks."""
        self._reply_chunk_bytes, self._reply_delay_s = chunk_bytes, delay_s

    def close(self) -> None:
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._open |= {client, upstream}
            for src, dst, reply in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pipe, args=(src, dst, reply), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, reply: bool) -> None:
        try:
            while data := src.recv(self._reply_chunk_bytes if reply else 65536):
                dst.sendall(data)
                if reply and self._reply_delay_s:
                    time.sleep(self._reply_delay_s)
        except OSError:
            pass  # cut, or the peer went away
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self._lock:
                self._open -= {src, dst}
