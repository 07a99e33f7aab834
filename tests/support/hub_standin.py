"""A stand-in for the Hugging Face Hub's HTTP endpoints, on 127.0.0.1, for the download stage.

Serves ``GET /api/models/{repo}/revision/{rev}`` (model info with file metadata) and
``GET /{repo}/resolve/{rev}/{file}`` with Range requests; LFS files redirect to a CDN path as on the
real Hub. ``cut_after[name] = n`` drops the connection after n bytes, once, to test resuming.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "a" * 40


class HubStandIn:
    def __init__(self, repo: str, directory: Path) -> None:
        self.repo = repo
        self.files = {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
        self.cut_after: dict[str, int] = {}
        self.ranges: list[tuple[str, str | None]] = []  # (file, Range header) per download request
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> HubStandIn:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def info(self) -> dict:
        siblings = []
        for name, data in self.files.items():
            entry = {"rfilename": name, "size": len(data), "blobId": hashlib.sha1(data).hexdigest()}
            if name.endswith(".safetensors"):
                entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            siblings.append(entry)
        siblings.append({"rfilename": "README.md", "size": 5, "blobId": "0" * 40})
        return {"id": self.repo, "sha": COMMIT, "private": False, "siblings": siblings}

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                if m := re.fullmatch(r"/api/models/(.+)/revision/([^/]+)", path):
                    if m.group(1) != hub.repo:
                        return self._send(
                            404,
                            b'{"error":"Repository not found"}',
                            {"X-Error-Code": "RepoNotFound", "Content-Type": "application/json"},
                        )
                    return self._send(200, json.dumps(hub.info()).encode(), {"Content-Type": "application/json"})
                if m := re.fullmatch(r"/(.+)/resolve/([^/]+)/([^/]+)", path):
                    if m.group(1) != hub.repo or m.group(3) not in hub.files:
                        return self._send(404, b"Entry not found", {"X-Error-Code": "EntryNotFound"})
                    if m.group(3).endswith(".safetensors"):  # LFS: the Hub redirects to its CDN
                        return self._send(302, b"", {"Location": f"/cdn/{m.group(3)}"})
                    return self._file(m.group(3))
                if m := re.fullmatch(r"/cdn/([^/]+)", path):
                    return self._file(m.group(1))
                self._send(404, b"not found")

            def _file(self, name):
                data = hub.files[name]
                rng = self.headers.get("Range")
                hub.ranges.append((name, rng))
                start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1)) if rng else 0
                body = data[start:]
                headers = {"Content-Length": str(len(body)), "Accept-Ranges": "bytes"}
                if rng:
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                self.send_response(206 if rng else 200)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                cut = hub.cut_after.pop(name, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

            def _send(self, code, body, headers=None):
                self.send_response(code)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
