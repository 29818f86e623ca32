"""The chaos suite's target app. Every GET answers `chaos <app> <release> <container>` (so the load
generator knows which container answered) and writes one line naming the path, so the suite can
tell which answered requests reached the log stream. `GET /flood?lines=N&tag=T` writes N numbered
lines as fast as stdout takes them, from a thread, and answers at once."""

import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

APP = os.environ.get("DEIS_APP", "chaos")
RELEASE = os.environ.get("DEIS_RELEASE", "?")
HOST = socket.gethostname()
MAX_FLOOD = 1_000_000


def flood(lines, tag):
    out = sys.stdout
    for i in range(lines):
        out.write(f"flood {tag} {i}\n")
    out.flush()


class Chaos(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/flood":
            query = parse_qs(url.query)
            try:
                lines = int(query.get("lines", ["0"])[0])
            except ValueError:
                lines = -1
            tag = query.get("tag", ["flood"])[0][:64]
            if not 0 < lines <= MAX_FLOOD or not tag.isalnum():
                self.answer(400, f"lines must be 1..{MAX_FLOOD} and tag alphanumeric\n")
                return
            threading.Thread(target=flood, args=(lines, tag), daemon=True).start()
            self.answer(202, f"flooding {lines} lines tagged {tag}\n")
            return
        self.answer(200, f"chaos {APP} {RELEASE} {HOST}\n")

    def log_message(self, fmt, *args):
        # One line per request; the suite counts them in the app's drain stream.
        print(f"chaos: {self.command} {self.path} answered by {HOST}", flush=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "5000"))
    print(f"chaos: {APP} {RELEASE} listening on port {port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Chaos).serve_forever()
