"""A stand-in Ollama server on 127.0.0.1 that follows Ollama's REST API (docs/api.md): status codes,
``{"error": ...}`` bodies, NDJSON streams with in-stream errors, sha256 blob digests, timing fields.

The code under test talks to it through the official ``ollama`` client, exactly as to a real server.
Scriptable: ``behaviour[model]`` picks what /api/generate answers ("normal", "empty", "repeat", "leak",
"length"), ``fail_create`` makes the next create stream end in an error, ``version`` plays an old server.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PDCA = ("# PDCA: component creation\n\n## Plan\n- Define the component boundary.\n\n## Do\n- Write the scenario.\n\n"
        "## Check\n- Run the tests.\n\n## Act\n- Keep what worked.\n")
OUTPUTS = {"normal": PDCA, "empty": "", "repeat": "G" * 200, "leak": PDCA + "<|im_start|>user\nmore",
           "length": PDCA}
LIBRARY_TEMPLATE = '{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n<|im_start|>assistant\n'


def now() -> str:
    return datetime.now(timezone.utc).isoformat()


class OllamaStandIn:
    def __init__(self, version: str = "0.12.6") -> None:
        self.version = version
        self.blobs: dict[str, bytes] = {}
        self.models: dict[str, dict] = {}
        self.loaded: set[str] = set()
        self.behaviour: dict[str, str] = {}
        self.fail_create: str | None = None
        self.requests: list[tuple[str, str]] = []
        self.creates: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "OllamaStandIn":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_library_model(self, name: str = "qwen2.5-coder:7b-instruct-q4_K_M") -> None:
        self.models[name] = {"template": LIBRARY_TEMPLATE, "system": "", "quantize": "Q4_K_M", "digest": "ab" * 32,
                             "parameters": {"stop": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]},
                             "size": 4683087332, "modified_at": now(), "family": "qwen2"}

    @staticmethod
    def full(name: str) -> str:
        return name if ":" in name else f"{name}:latest"

    # -- the API ---------------------------------------------------------------------------
    def route(self, method: str, path: str, body: dict, raw: bytes):
        """(status, JSON body) or (status, [NDJSON objects]) or (status, None)."""
        self.requests.append((method, path))
        if m := re.fullmatch(r"/api/blobs/(sha256:[0-9a-f]{64})", path):
            digest = m.group(1)
            if method == "HEAD":
                return (200 if digest in self.blobs else 404), None
            if "sha256:" + hashlib.sha256(raw).hexdigest() != digest:
                return 400, {"error": "digest mismatch"}
            self.blobs[digest] = raw
            return 201, None
        if path == "/api/version":
            return 200, {"version": self.version}
        if path == "/api/tags":
            return 200, {"models": [self._listing(n) for n in self.models]}
        if path == "/api/ps":
            return 200, {"models": [{**self._listing(n), "expires_at": now(), "size_vram": 0, "context_length": 4096}
                                    for n in self.loaded]}
        if path == "/api/create":
            return self._create(body)
        name = self.full(body.get("model") or body.get("source") or "")
        if path in ("/api/show", "/api/copy", "/api/delete", "/api/generate") and name not in self.models:
            return 404, {"error": f"model '{body.get('model') or body.get('source')}' not found"}
        if path == "/api/show":
            m = self.models[name]
            params = "\n".join(f'{k} "{v}"' if isinstance(v, str) else f"{k} {v}"
                               for k, vs in m["parameters"].items() for v in (vs if isinstance(vs, list) else [vs]))
            return 200, {"modelfile": f"FROM {name}\n", "parameters": params, "template": m["template"],
                         "system": m["system"], "details": self._details(m), "modified_at": m["modified_at"],
                         "model_info": {"general.architecture": "qwen2"}, "capabilities": ["completion"]}
        if path == "/api/copy":
            self.models[self.full(body["destination"])] = dict(self.models[name], modified_at=now())
            return 200, None
        if path == "/api/delete":
            del self.models[name]
            return 200, None
        if path == "/api/generate":
            return self._generate(name, body)
        return 404, {"error": "404 page not found"}

    def _details(self, m: dict) -> dict:
        return {"parent_model": "", "format": "gguf", "family": m["family"], "families": [m["family"]],
                "parameter_size": "7.6B", "quantization_level": m["quantize"]}

    def _listing(self, name: str) -> dict:
        m = self.models[name]
        return {"name": name, "model": name, "modified_at": m["modified_at"], "size": m["size"],
                "digest": m["digest"], "details": self._details(m)}

    def _create(self, body: dict):
        if tuple(int(n) for n in self.version.split(".")) < (0, 5, 5) and "files" in body:
            return 400, {"error": "neither 'from' or 'files' was specified"}
        files = body.get("files") or {}
        missing = [d for d in files.values() if d not in self.blobs]
        if missing:
            return 400, {"error": f"invalid digest: {missing[0]} (blob not found)"}
        self.creates.append(body)
        lines = [{"status": "parsing GGUF"}] + [{"status": f"using existing layer {d}"} for d in files.values()]
        if body.get("quantize"):
            lines += [{"status": f"quantizing F16 model to {body['quantize'].upper()}", "digest": "0",
                       "total": 100, "completed": c} for c in (0, 50, 100)]
        if self.fail_create:
            message, self.fail_create = self.fail_create, None
            return 200, lines + [{"error": message}]
        digest = "sha256:" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        size = sum(len(self.blobs[d]) for d in files.values())
        self.models[self.full(body["model"])] = {
            "template": body.get("template", ""), "system": body.get("system", ""),
            "parameters": body.get("parameters") or {}, "quantize": (body.get("quantize") or "F16").upper(),
            "digest": digest.split(":")[1], "size": size, "modified_at": now(), "family": "qwen2"}
        return 200, lines + [{"status": "writing manifest"}, {"status": "success"}]

    def _generate(self, name: str, body: dict):
        if not body.get("prompt") and body.get("keep_alive") == 0:
            self.loaded.discard(name)
            return 200, {"model": name, "created_at": now(), "response": "", "done": True, "done_reason": "unload"}
        self.loaded.add(name)
        kind = self.behaviour.get(name, "normal")
        limit = (body.get("options") or {}).get("num_predict", 128)
        words = re.findall(r"\S+\s*|\s+", OUTPUTS[kind]) if kind != "repeat" else ["G"] * 200
        if kind == "length":
            words = (words * 50)[:limit]
        words = words[:limit]
        parts = [{"model": name, "created_at": now(), "response": w, "done": False} for w in words]
        reason = "length" if kind == "length" or len(words) >= limit else "stop"
        parts.append({"model": name, "created_at": now(), "response": "", "done": True, "done_reason": reason,
                      "total_duration": 900_000_000, "load_duration": 300_000_000, "prompt_eval_count": 12,
                      "prompt_eval_duration": 100_000_000, "eval_count": len(words),
                      "eval_duration": max(1, len(words)) * 20_000_000})
        return 200, parts if body.get("stream", True) else parts[-1]

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self, method):
                raw = self._body()
                try:
                    body = json.loads(raw) if raw and not self.path.startswith("/api/blobs") else {}
                except ValueError:
                    body = {}
                status, payload = standin.route(method, self.path.split("?")[0], body, raw)
                if isinstance(payload, list):
                    data = b"".join(json.dumps(p).encode() + b"\n" for p in payload)
                    content_type = "application/x-ndjson"
                else:
                    data = json.dumps(payload).encode() if payload is not None else b""
                    content_type = "application/json"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(data)

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # a streamed upload
                    out = b""
                    while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                        out += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return out
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

        return Handler
