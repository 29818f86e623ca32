"""The security tier's app. `GET /headers` answers the request's headers as JSON (so the tier can
see what the edge let through); every other GET answers `secure <app>`. Each request writes one
line naming its method and path, so the tier can see in the app's log whether anything reached it."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

APP = os.environ.get("DEIS_APP", "secure")


class App(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, status, body, kind="text/plain; charset=utf-8"):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/headers":
            headers = {k.lower(): v for k, v in self.headers.items()}
            self.answer(200, json.dumps(headers).encode(), "application/json")
            return
        self.answer(200, f"secure {APP}\n".encode())

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0") or "0")
        self.rfile.read(min(length, 1 << 20))
        self.answer(200, b"posted\n")

    def log_message(self, fmt, *args):
        print(f"secure: {self.command} {self.path}", flush=True)


if __name__ == "__main__":
    ThreadingHTTPServer(("0.0.0.0", int(os.environ.get("PORT", "5000"))), App).serve_forever()
