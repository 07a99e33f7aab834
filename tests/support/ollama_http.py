"""HTTP plumbing for the Ollama stand-in: request bodies (Content-Length or chunked, as httpx sends a
streamed upload), JSON answers, and NDJSON streams written line by line with chunked encoding, as Ollama
writes them. A stream whose first object is an error becomes an HTTP error instead, as in Ollama's
streamResponse (nothing was written yet, so the status code can still say it)."""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(route: Callable) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def _serve(self, method: str) -> None:
            raw = self._body()
            path = self.path.split("?")[0]
            try:
                body = json.loads(raw) if raw and not path.startswith("/api/blobs") else {}
            except ValueError:
                return self._json(400, {"error": "invalid character in request body"}, method)
            status, payload = route(method, path, body if isinstance(body, dict) else {}, raw)
            if payload == "cut":  # a connection cut: the socket closes with no answer at all
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return None
            if payload is None or isinstance(payload, dict):
                return self._json(status, payload, method)
            first = next(payload, None)
            if first is not None and "error" in first:
                return self._json(first.get("status", 500), {"error": first["error"]}, method)
            self.send_response(status)
            self.send_header("Content-Type", "application/x-ndjson")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if first is not None:
                self._chunk(first)
                for part in payload:
                    self._chunk({"error": part["error"]} if "error" in part else part)
                    if "error" in part:
                        break
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        def _chunk(self, obj: dict) -> None:
            line = json.dumps(obj).encode() + b"\n"
            self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
            self.wfile.flush()

        def _json(self, status: int, payload: dict | None, method: str) -> None:
            data = json.dumps(payload).encode() if payload is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(data)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                parts = []
                while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(parts)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def do_GET(self):
            self._serve("GET")

        def do_POST(self):
            self._serve("POST")

        def do_HEAD(self):
            self._serve("HEAD")

        def do_DELETE(self):
            self._serve("DELETE")

    server = _QuietServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True  # an open keep-alive connection must not hold up shutdown
    return server


class _QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-stream (as the ollama client does after an in-stream error) is
    normal; socketserver would print a traceback to stderr, where the tests read the stage's error."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)
