"""A stand-in Ollama server on 127.0.0.1 that follows Ollama's REST API (docs/api.md, and the server's
routes where the docs are silent): status codes with ``{"error": ...}`` bodies, NDJSON streams sent as
they are made (an error before any output is an HTTP error, one after it an ``{"error"}`` line), sha256
blob digests checked on upload, GGUF headers parsed at create, the timing fields of /api/generate.
The code under test talks to it through the official ``ollama`` client, exactly as to a real server.

    with OllamaStandIn() as ollama:                  # then OLLAMA_HOST=ollama.url
        ollama.add_library_model()                   # qwen2.5-coder:7b-instruct-q4_K_M, library template
        ollama.add_model("web4-agent:build-1")       # any model, preloaded
        ollama.behaviour[name] = "repeat"            # normal | empty | repeat | leak | length | literal text
        ollama.fail_create = "unsupported architecture"   # the next create stream ends in this error
        ollama.http_errors["/api/copy"] = (500, "disk full")  # the next call to a path fails so
        ollama.version = "0.5.4"                     # an old server: no files-based create
        ollama.load(name)                            # shows in /api/ps

Answers are deterministic. A created model with no TEMPLATE answers like a fine-tune served with a bare
prompt (template tokens leak); one with no stop tokens never stops (runs into num_predict).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ollama_http import serve

from w4tui.gguf_header import NotGGUF, read_info

LIBRARY = "qwen2.5-coder:7b-instruct-q4_K_M"
LIBRARY_TEMPLATE = (Path(__file__).resolve().parents[2] / "w4tui" / "data" / "qwen2.5-coder.template").read_text()
QUANT_OK = {"F32", "F16", "Q8_0", "Q4_K_S", "Q4_K_M", "Q4_K", "BF16"}  # ggml.ParseFileType
BITS = {"Q4_K_M": 4.9, "Q4_K_S": 4.6, "Q8_0": 8.5, "F16": 16, "BF16": 16, "F32": 32}


def now(delta: float = 0) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta)).isoformat()


def pdca(prompt: str) -> str:
    topic = prompt.strip().rstrip(".?!") or "the task"
    return (
        f"# PDCA: {topic}\n\n## Plan\n- Scope one Web4 component.\n\n## Do\n1. Create the component.\n"
        "2. Write its test.\n\n## Check\n- The tests are green.\n\n## Act\n- Keep what worked.\n"
    )


def answer(kind: str, prompt: str) -> str:
    if kind == "normal":
        return pdca(prompt)
    if kind == "empty":
        return ""
    if kind == "repeat":
        return "## Plan\n" + "G" * 400
    if kind == "leak":
        return pdca(prompt) + "<|im_end|>\n<|im_start|>user\nThank you!<|im_end|>\n<|im_start|>assistant\n"
    if kind == "length":  # never stops: numbered steps, no two alike
        return "".join(f"{i}. Step {i} of the plan: refine part {i} of the component.\n" for i in range(1, 2000))
    return kind  # literal text


def go_value(value) -> str:
    """A parameter value as ``ollama show`` prints it (Go's %#v)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


class OllamaStandIn:
    def __init__(self, version: str = "0.12.6") -> None:
        self.version = version
        self._dir = Path(tempfile.mkdtemp(prefix="ollama-standin-"))
        self.blobs: dict[str, Path] = {}
        self.models: dict[str, dict] = {}
        self.loaded: dict[str, str] = {}  # model -> expires_at
        self.behaviour: dict[str, str] = {}
        self.fail_create: str | None = None
        self.http_errors: dict[str, tuple[int, str]] = {}
        self.first_token_delay = 0.0
        self.requests: list[tuple[str, str]] = []
        self.creates: list[dict] = []
        self.generates: list[dict] = []
        self.lock = threading.RLock()
        self.server = serve(self.route)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> OllamaStandIn:
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self._dir, ignore_errors=True)

    # -- scripting ------------------------------------------------------------------------------
    def add_model(
        self,
        name: str,
        template: str = LIBRARY_TEMPLATE,
        parameters: dict | None = None,
        system: str = "",
        quantize: str = "Q4_K_M",
        size: int = 4683087332,
        family: str = "qwen2",
        parameter_size: str = "7.6B",
    ) -> dict:
        blob = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
        parameters = {"stop": ["<|im_start|>", "<|im_end|>"]} if parameters is None else parameters
        return self._store(self.full(name), blob, template, system, parameters, quantize, size, family, parameter_size)

    def add_library_model(self, name: str = LIBRARY) -> dict:
        return self.add_model(name)

    def load(self, name: str, keep_alive: float = 300) -> None:
        self.loaded[self.full(name)] = now(keep_alive)

    @staticmethod
    def full(name: str) -> str:
        return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"

    def _store(self, name, blob, template, system, parameters, quantize, size, family, parameter_size) -> dict:
        layers = {"model": blob, "template": template, "system": system, "params": parameters}
        digest = hashlib.sha256(json.dumps(layers, sort_keys=True).encode()).hexdigest()  # the manifest's
        self.models[name] = {
            "template": template,
            "system": system,
            "parameters": parameters,
            "quantize": quantize,
            "digest": digest,
            "blob": blob,
            "size": size,
            "modified_at": now(),
            "family": family,
            "parameter_size": parameter_size,
        }
        return self.models[name]

    # -- the API --------------------------------------------------------------------------------
    def route(self, method: str, path: str, body: dict, raw: bytes):
        """(status, JSON object | None) or (status, iterator of objects) for a stream."""
        with self.lock:
            self.requests.append((method, path))
            if path in self.http_errors:
                status, message = self.http_errors.pop(path)
                return status, {"error": message}
        if m := re.fullmatch(r"/api/blobs/([^/]+)", path):
            return self._blob(method, m.group(1), raw)
        if path == "/api/version" and method == "GET":
            return 200, {"version": self.version}
        if path == "/api/tags" and method == "GET":
            return 200, {"models": [self._listing(n) for n in sorted(self.models)]}
        if path == "/api/ps" and method == "GET":
            return 200, {
                "models": [
                    {**self._listing(n), "expires_at": exp, "size_vram": self.models[n]["size"], "context_length": 4096}
                    for n, exp in self.loaded.items()
                    if n in self.models
                ]
            }
        if path == "/api/create" and method == "POST":
            return self._create(body)
        if path == "/api/copy" and method == "POST":
            source = self.full(body.get("source", ""))
            if source not in self.models:
                return 404, {"error": f'model "{body.get("source")}" not found'}
            with self.lock:
                self.models[self.full(body["destination"])] = dict(self.models[source], modified_at=now())
            return 200, None
        name = self.full(body.get("model") or "")
        if path in ("/api/show", "/api/delete", "/api/generate") and not body.get("model"):
            return 400, {"error": "model is required"}
        if path in ("/api/show", "/api/delete", "/api/generate") and name not in self.models:
            return 404, {"error": f"model '{body['model']}' not found"}
        if path == "/api/show" and method == "POST":
            return 200, self._show(name)
        if path == "/api/delete" and method == "DELETE":
            with self.lock:
                del self.models[name]
                self.loaded.pop(name, None)
            return 200, None
        if path == "/api/generate" and method == "POST":
            return self._generate(name, body)
        return 404, {"error": "404 page not found"}

    def _blob(self, method: str, digest: str, raw: bytes):
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            return 400, {"error": "invalid digest format"}
        if method == "HEAD":
            return (200 if digest in self.blobs else 404), None
        if digest in self.blobs:
            return 200, None
        got = "sha256:" + hashlib.sha256(raw).hexdigest()
        if got != digest:
            return 400, {"error": f'digest mismatch, expected "{digest}", got "{got}"'}
        path = self._dir / digest.replace(":", "-")
        path.write_bytes(raw)
        self.blobs[digest] = path
        return 201, None

    def _listing(self, name: str) -> dict:
        m = self.models[name]
        return {
            "name": name,
            "model": name,
            "modified_at": m["modified_at"],
            "size": m["size"],
            "digest": m["digest"],
            "details": self._details(m),
        }

    @staticmethod
    def _details(m: dict) -> dict:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": m["family"],
            "families": [m["family"]],
            "parameter_size": m["parameter_size"],
            "quantization_level": m["quantize"],
        }

    def _show(self, name: str) -> dict:
        m = self.models[name]
        params = [(k, v) for k, vs in sorted(m["parameters"].items()) for v in (vs if isinstance(vs, list) else [vs])]
        modelfile = [
            '# Modelfile generated by "ollama show"',
            "# To build a new Modelfile based on this, replace FROM with:",
            f"# FROM {name}",
            "",
            f"FROM /root/.ollama/models/blobs/{m['blob'].replace(':', '-')}",
            f'TEMPLATE """{m["template"]}"""',
        ]
        modelfile += [f'SYSTEM """{m["system"]}"""'] if m["system"] else []
        modelfile += [f"PARAMETER {k} {go_value(v)}" for k, v in params]
        return {
            "license": "",
            "modelfile": "\n".join(modelfile) + "\n",
            "template": m["template"],
            "parameters": "\n".join(f"{k:<30} {go_value(v)}" for k, v in params),
            "system": m["system"],
            "details": self._details(m),
            "modified_at": m["modified_at"],
            "model_info": {"general.architecture": m["family"], "general.file_type": m["quantize"]},
            "capabilities": ["completion"] + (["tools"] if ".Tools" in m["template"] else []),
        }

    def _create(self, body: dict):
        if tuple(int(n) for n in re.findall(r"\d+", self.version)[:3]) < (0, 5, 5):
            return 400, {"error": "path or Modelfile are required"}  # what 0.5.4 and older answer
        files = body.get("files")
        if any(not d for d in (files or {}).values()):
            return 400, {"error": "invalid digest format"}
        if not re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)*(:[\w][\w.-]{0,79})?", body.get("model") or ""):
            return 400, {"error": "invalid model name"}
        if not files and not body.get("from"):
            return 400, {"error": "neither 'from' or 'files' was specified"}
        with self.lock:
            self.creates.append(body)
        return 200, self._create_stream(body)

    def _create_stream(self, body: dict):
        files = body.get("files") or {}
        if body.get("from"):
            base = self.models.get(self.full(body["from"]))
            if base is None:
                yield {"error": f"model '{body['from']}' not found", "status": 404}
                return
            blob, info_type, size, params_size = base["blob"], base["quantize"], base["size"], base["parameter_size"]
        else:
            yield {"status": "parsing GGUF"}
            digest = next(iter(files.values()))
            if digest not in self.blobs:
                blob_path = f"/root/.ollama/models/blobs/{digest.replace(':', '-')}"
                yield {"error": f"open {blob_path}: no such file or directory"}
                return
            try:
                info = read_info(self.blobs[digest])
            except NotGGUF:
                yield {"error": "supplied file was not in GGUF format"}
                return
            blob, info_type, size = digest, info.file_type, self.blobs[digest].stat().st_size
            params_size = f"{info.parameters / 1e6:.2f}M"
        quant = (body.get("quantize") or "").upper()
        if quant:
            if quant not in QUANT_OK:
                yield {
                    "error": f"unsupported quantization type {quant} - supported types are F32, F16, Q4_K_S, "
                    "Q4_K_M, Q8_0"
                }
                return
            if info_type not in ("F16", "BF16", "F32"):
                yield {"error": "quantization is only supported for F16, BF16 and F32 models"}
                return
            for done in (0, size // 2, size):
                yield {
                    "status": f"quantizing {info_type} model to {quant}",
                    "digest": "0",
                    "total": size,
                    "completed": done,
                }
            yield {"status": "verifying conversion"}
            blob = "sha256:" + hashlib.sha256(f"{blob}{quant}".encode()).hexdigest()
            size = int(size * BITS.get(quant, 8) / BITS.get(info_type, 16))
            info_type = "Q4_K_M" if quant == "Q4_K" else quant
            yield {"status": f"creating new layer {blob}"}
        else:
            yield {"status": f"using existing layer {blob}"}
        for layer in ("template", "system", "parameters"):
            if body.get(layer):
                yield {"status": f"creating new layer sha256:{hashlib.sha256(repr(body[layer]).encode()).hexdigest()}"}
        if self.fail_create:
            message, self.fail_create = self.fail_create, None
            yield {"error": message}
            return
        yield {"status": "writing manifest"}
        with self.lock:
            self._store(
                self.full(body["model"]),
                blob,
                body.get("template", ""),
                body.get("system", ""),
                body.get("parameters") or {},
                info_type,
                size,
                "qwen2",
                params_size,
            )
        yield {"status": "success"}

    def _generate(self, name: str, body: dict):
        with self.lock:
            self.generates.append(body)
        keep_alive = body.get("keep_alive")
        if not body.get("prompt"):  # load or unload, one object
            if keep_alive == 0:
                self.loaded.pop(name, None)
                return 200, {"model": name, "created_at": now(), "response": "", "done": True, "done_reason": "unload"}
            self.load(name)
            return 200, {"model": name, "created_at": now(), "response": "", "done": True, "done_reason": "load"}
        m = self.models[name]
        default = ("normal" if m["parameters"].get("stop") else "length") if m["template"].strip() else "leak"
        text = answer(self.behaviour.get(name, default), body["prompt"])
        limit = (body.get("options") or {}).get("num_predict", -1)
        pieces = re.findall(r"\S+\s*|\s+", text)
        stop = limit < 0 or len(pieces) <= limit
        pieces = pieces if stop else pieces[:limit]
        was_loaded = name in self.loaded
        self.load(name, 300 if keep_alive is None else 0)
        if keep_alive == 0:
            self.loaded.pop(name, None)
        prompt_tokens = len(body["prompt"].split()) + 20
        final = {
            "model": name,
            "created_at": now(),
            "response": "",
            "done": True,
            "done_reason": "stop" if stop else "length",
            "context": [1, 2, 3],
            "load_duration": 5_000_000 if was_loaded else 1_500_000_000,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": prompt_tokens * 2_000_000,
            "eval_count": len(pieces),
            "eval_duration": max(1, len(pieces)) * 25_000_000,
        }
        final["total_duration"] = final["load_duration"] + final["prompt_eval_duration"] + final["eval_duration"]
        if body.get("stream") is False:
            return 200, {**final, "response": "".join(pieces)}

        def stream():
            time.sleep(self.first_token_delay)
            for piece in pieces:
                yield {"model": name, "created_at": now(), "response": piece, "done": False}
            yield final

        return 200, stream()
