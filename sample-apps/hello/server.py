"""hello: the sample app of the end-to-end test. Answers every GET with its greeting ($GREETING,
"Hello" by default), the release it runs and the container that answered, and writes one line
per request to stdout, so `deis logs` has something to show."""

import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Hello(BaseHTTPRequestHandler):
    def do_GET(self):
        greeting = os.environ.get("GREETING", "Hello")
        body = (
            f"{greeting} from {os.environ.get('DEIS_APP', 'hello')} "
            f"{os.environ.get('DEIS_RELEASE', '?')} on {socket.gethostname()}\n"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        greeting = os.environ.get("GREETING", "Hello")
        print(f"hello: {self.command} {self.path} answered {greeting}", flush=True)


if __name__ == "__main__":
    port = int(os.environ.get("PORT", "5000"))
    print(f"hello: listening on port {port}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Hello).serve_forever()
