"""Relay GET /metrics of one service on an internal network to the host (the e2e run of compose).

The sandbox sits only on internal networks, where Docker publishes no port; the end-to-end suite
reads its /metrics from the host, so docker/compose.e2e.yml runs this relay on the sandbox's
metrics network and on `default`, publishing it on 127.0.0.1. It forwards GET /metrics and nothing
else: no request body ever reaches the sandbox through it.

    python metrics_relay.py <upstream /metrics URL> <port>
"""

from __future__ import annotations

import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    upstream, port = sys.argv[1], int(sys.argv[2])

    class Relay(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?", 1)[0] not in ("/metrics", "/healthz"):
                self.send_error(404, "only /metrics is relayed")
                return
            url = upstream if self.path.startswith("/metrics") else upstream.rsplit("/", 1)[0] + "/healthz"
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    body, status, kind = r.read(), r.status, r.headers.get("Content-Type", "text/plain")
            except OSError as e:
                self.send_error(502, f"{url}: {e}")
                return
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    ThreadingHTTPServer(("0.0.0.0", port), Relay).serve_forever()


if __name__ == "__main__":
    main()
