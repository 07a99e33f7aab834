"""A stand-in for the Hugging Face Hub's HTTP endpoints, on 127.0.0.1, for the download stage.

Serves what huggingface_hub calls (hf_api.model_info / list_repo_tree, file_download.get_hf_file_metadata
and http_get): ``GET /api/models/{repo}/revision/{rev}`` (model info, with file metadata),
``GET /api/models/{repo}/tree/{rev}`` (the file listing), ``HEAD|GET /{repo}/resolve/{rev}/{file}``
with the Hub's X-Repo-Commit / ETag / X-Linked-* headers. LFS files redirect to a CDN on another port
(another origin, as on the real Hub, so the library stops at the redirect for the file's metadata),
which serves Range requests. Errors carry the Hub's X-Error-Code. ``cuts[name] = [n, ...]`` drops the
connection after n bytes of the file's body, one entry per request; ``corrupt`` flips a bit in a file.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

COMMIT = "a" * 40


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubStandIn:
    def __init__(self, repo: str, directory: Path, gated: bool = False) -> None:
        self.repo, self.gated = repo, gated
        self.files = {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}
        self.extra = {"README.md": b"# x\n"}  # in the repo, not a model file: never fetched
        self.cuts: dict[str, list[int]] = {}
        self.corrupt: set[str] = set()  # files whose bytes are served with one bit flipped
        self.ranges: list[tuple[str, str | None]] = []  # (file, Range header) per file body sent
        self.servers = [ThreadingHTTPServer(("127.0.0.1", 0), self._handler()) for _ in range(2)]
        self.url, self.cdn = (f"http://127.0.0.1:{s.server_address[1]}" for s in self.servers)

    def __enter__(self) -> HubStandIn:
        for server in self.servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()

    def all_files(self) -> dict[str, bytes]:
        return {**self.files, **self.extra}

    def is_lfs(self, name: str) -> bool:
        return name.endswith(".safetensors")

    def info(self) -> dict:
        siblings = []
        for name, data in self.all_files().items():
            entry = {"rfilename": name, "size": len(data), "blobId": git_sha1(data)}
            if self.is_lfs(name):
                entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            siblings.append(entry)
        return {
            "id": self.repo,
            "sha": COMMIT,
            "private": False,
            "gated": self.gated and "manual",
            "siblings": siblings,
        }

    def tree(self) -> list[dict]:
        entries = []
        for name, data in self.all_files().items():
            entry = {"type": "file", "path": name, "size": len(data), "oid": git_sha1(data)}
            if self.is_lfs(name):
                entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return entries

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_HEAD(self):
                self._route(body=False)

            def do_GET(self):
                self._route(body=True)

            def _route(self, body: bool):
                path = unquote(self.path.split("?")[0])
                if m := re.fullmatch(r"/cdn/([^/]+)", path):
                    return self._file(m.group(1), body)
                if m := re.fullmatch(r"/api/models/(.+)/(revision|tree)/([^/]+)", path):
                    if error := self._refused(m.group(1), m.group(3)):
                        return self._send(*error)
                    data = hub.info() if m.group(2) == "revision" else hub.tree()
                    return self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json"}, body)
                if m := re.fullmatch(r"/(.+)/resolve/([^/]+)/(.+)", path):
                    if error := self._refused(m.group(1), m.group(2)):
                        return self._send(*error, body=body)
                    name, files = m.group(3), hub.all_files()
                    if name not in files:
                        return self._send(
                            404, b"Entry not found", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}, body
                        )
                    data = files[name]
                    headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{git_sha1(data)}"'}
                    if hub.is_lfs(name):  # the Hub answers for LFS files with a redirect to its CDN
                        headers.update(
                            {
                                "X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"',
                                "X-Linked-Size": str(len(data)),
                                "Location": f"{hub.cdn}/cdn/{name}",
                            }
                        )
                        return self._send(302, b"", headers, body)
                    return self._file(name, body, headers)
                self._send(404, b"not found", body=body)

            def _refused(self, repo: str, revision: str):
                if repo != hub.repo:
                    return 401, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"}
                if hub.gated and "authorization" not in {k.lower() for k in self.headers}:
                    return 401, b'{"error":"Access to this model is restricted"}', {"X-Error-Code": "GatedRepo"}
                if revision not in ("main", COMMIT):
                    return 404, b'{"error":"Invalid rev id"}', {"X-Error-Code": "RevisionNotFound"}
                return None

            def _file(self, name, body, headers=None):
                data = hub.all_files()[name]
                if name in hub.corrupt:
                    data = bytes([data[0] ^ 1]) + data[1:]
                rng = self.headers.get("Range")
                start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1)) if rng else 0
                chunk = data[start:]
                headers = {**(headers or {}), "Content-Length": str(len(chunk)), "Accept-Ranges": "bytes"}
                if rng:
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                self.send_response(206 if rng else 200)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if not body:
                    return
                hub.ranges.append((name, rng))
                cuts = hub.cuts.get(name)
                if cuts:
                    self.wfile.write(chunk[: cuts.pop(0)])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(chunk)

            def _send(self, code, content, headers=None, body=True):
                self.send_response(code)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if body:
                    self.wfile.write(content)

        return Handler
