"""A stand-in Ollama server on 127.0.0.1 that follows Ollama's REST API and, where the docs are silent
or wrong, its source (server/routes.go, server/create.go, server/images.go, llm/llama_server.go,
parser/parser.go, internal/modelref/modelref.go): status codes with ``{"error": ...}`` bodies, NDJSON
streams sent as they are made (an error before any output is an HTTP error, one after it an
``{"error"}`` line: routes.go streamResponse), sha256 blob digests checked on upload, GGUF headers
parsed at create. The code under test talks to it through the official ``ollama`` client.

    with OllamaStandIn(version="0.33.0") as ollama:  # 0.30+ behaviour; "0.12.6" (default): docs era
        ollama.add_library_model()                   # qwen2.5-coder:7b-instruct-q4_K_M, library template
        ollama.add_model("web4-agent:build-1")       # any model, preloaded
        ollama.behaviour[name] = "repeat"            # normal | empty | repeat | newlines | leak | length | text
        ollama.fail_create = "unsupported architecture"   # the next create stream ends in this error
        ollama.http_errors["/api/copy"] = (500, "disk full")  # the next call to a path fails so
        ollama.faults["/api/copy"] = ["cut-done"]    # per call: ok | 500 | 500-broken | cut | cut-done | cut-broken
        ollama.version = "0.5.4"                     # an old server: no files-based create
        ollama.load(name)                            # shows in /api/ps

What differs between the eras is in ollama_behaviour.py. Answers are deterministic. A model with no
TEMPLATE answers like a fine-tune served with a bare prompt; one with no stop tokens never stops.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import threading
from pathlib import Path

from ollama_behaviour import DEFAULT_TEMPLATE, modelfile, now, parameters_text, stream, tokens
from ollama_http import serve

from core.gguf_header import NotGGUF, read_info

LIBRARY = "qwen2.5-coder:7b-instruct-q4_K_M"
LIBRARY_TEMPLATE = (Path(__file__).resolve().parents[2] / "w4tui" / "data" / "qwen2.5-coder.template").read_text()
QUANT_OK = {"F32", "F16", "Q8_0", "Q4_K_S", "Q4_K_M", "Q4_K", "BF16"}  # fs/ggml/type.go ParseFileType
BITS = {"Q4_K_M": 4.9, "Q4_K_S": 4.6, "Q8_0": 8.5, "F16": 16, "BF16": 16, "F32": 32}
FILE_TYPE_NAMES = {1: "F16", 7: "Q8_0", 14: "Q4_K_S", 15: "Q4_K_M", 32: "BF16"}  # 0 (F32) reads as unknown


def era(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version)[:3]) or (0,)


class OllamaStandIn:
    def __init__(self, version: str = "0.12.6") -> None:
        self.version = version
        self._dir = Path(tempfile.mkdtemp(prefix="ollama-standin-"))
        self.blobs: dict[str, Path] = {}
        self.models: dict[str, dict] = {}
        self.loaded: dict[str, str] = {}  # model -> expires_at
        self.behaviour: dict[str, str] = {}
        self.fail_create: str | None = None
        self.forget_blobs = False  # a restart before the next create: unused blobs pruned
        self.no_llama_quantize = False  # 0.30+ needs the llama-quantize binary for every GGUF create
        self.http_errors: dict[str, tuple[int, str]] = {}
        self.faults: dict[str, list[str]] = {}
        self.first_token_delay = 0.0
        self.prompt_cache: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str]] = []
        self.creates: list[dict] = []
        self.generates: list[dict] = []
        self.chats: list[dict] = []  # the bodies of /api/chat requests, in order
        self.lock = threading.RLock()
        self.server = serve(self.route)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def modern(self) -> bool:
        return era(self.version) >= (0, 30, 0)

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
        return self._store(
            self.full(name),
            blob,
            template,
            system,
            parameters,
            quantize,
            size,
            family,
            parameter_size,
            {"general.architecture": family, "general.file_type": quantize},
        )

    def add_library_model(self, name: str = LIBRARY) -> dict:
        return self.add_model(name)

    def load(self, name: str, keep_alive: float = 300) -> None:
        self.loaded[self.full(name)] = now(keep_alive)

    def working(self, name: str) -> bool:
        return self.full(name) in self.models and not self.models[self.full(name)].get("broken")

    @staticmethod
    def full(name: str) -> str:
        return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"

    def _store(self, name, blob, template, system, parameters, quantize, size, family, parameter_size, info) -> dict:
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
            "model_info": info,
        }
        return self.models[name]

    def _selector(self, path: str, name: str):
        """internal/modelref/modelref.go parseSourceSuffix (0.30+): ':local' is the plain name, ':cloud'
        and '-cloud' go to ollama.com (unreachable here). Only show, generate and delete read them."""
        base, _, tag = name.rpartition(":")
        if not self.modern or not base or "/" in tag:
            return name, None
        if tag.lower() == "local":
            return self.full(base), None
        if tag.lower() == "cloud" or tag.lower().endswith("-cloud"):
            if path == "/api/delete":  # modelref.NormalizePullName: the legacy cloud tag, literally
                return name, None
            return name, (502, {"error": "dial tcp: lookup ollama.com: no such host"})
        return name, None

    # -- the API --------------------------------------------------------------------------------
    def route(self, method: str, path: str, body: dict, raw: bytes):
        """(status, JSON object | None), (status, iterator of objects) for a stream, or (0, "cut"):
        the connection is dropped without an answer."""
        with self.lock:
            self.requests.append((method, path))
            if path in self.http_errors:
                status, message = self.http_errors.pop(path)
                return status, {"error": message}
            fault = self.faults[path].pop(0) if self.faults.get(path) else "ok"
        if m := re.fullmatch(r"/api/blobs/([^/]+)", path):
            return self._blob(method, m.group(1), raw)
        if path == "/api/version" and method == "GET":
            return 200, {"version": self.version}
        if path == "/api/tags" and method == "GET":  # a broken manifest is skipped (manifest.Manifests(true))
            return 200, {"models": [self._listing(n) for n in sorted(self.models) if self.working(n)]}
        if path == "/api/ps" and method == "GET":
            return 200, {
                "models": [
                    {**self._listing(n), "expires_at": exp, "size_vram": self.models[n]["size"], "context_length": 4096}
                    for n, exp in self.loaded.items()
                    if self.working(n)
                ]
            }
        if path == "/api/create" and method == "POST":
            return self._create(body)
        if path == "/api/copy" and method == "POST":
            return self._copy(body, fault)
        name, refused = self._selector(path, self.full(body.get("model") or ""))
        if refused:
            return refused
        named = ("/api/show", "/api/delete", "/api/generate", "/api/chat")
        if path in named and not body.get("model"):
            return 400, {"error": "model is required"}
        if path in named and name not in self.models:
            return 404, {"error": f"model '{body['model']}' not found"}
        if path in named and self.models[name].get("broken"):
            return 500, {"error": "unexpected end of JSON input"}  # json.Decode of a truncated manifest
        if path == "/api/show" and method == "POST":
            return 200, self._show(name)
        if path == "/api/delete" and method == "DELETE":
            if fault in ("500", "cut"):
                return (500, {"error": "remove: input/output error"}) if fault == "500" else (0, "cut")
            with self.lock:
                del self.models[name]
                self.loaded.pop(name, None)
            return (0, "cut") if fault == "cut-done" else (200, None)
        if path == "/api/generate" and method == "POST":
            return self._generate(name, body)
        if path == "/api/chat" and method == "POST":
            return self._chat(name, body)
        return 404, {"error": "404 page not found"}

    def _chat(self, name: str, body: dict):
        """server/routes.go ChatHandler: the same runner as generate; each part carries the text as
        message.content (role assistant) instead of response; no messages loads (or, with keep_alive 0,
        unloads) the model."""
        with self.lock:
            self.chats.append(body)
        messages = body.get("messages") or []
        if not messages:
            status, part = self._generate(name, {"model": name, "keep_alive": body.get("keep_alive")})
            return status, self._as_chat(part)
        prompt = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        status, payload = self._generate(name, {**body, "prompt": prompt or " "})
        if isinstance(payload, dict) or status != 200:
            return status, self._as_chat(payload) if status == 200 else payload
        return status, (self._as_chat(part) for part in payload)

    @staticmethod
    def _as_chat(part: dict) -> dict:
        part = dict(part)
        part.pop("context", None)
        return {**part, "message": {"role": "assistant", "content": part.pop("response", "")}}

    def _copy(self, body: dict, fault: str):
        """server/images.go CopyModel: os.Create truncates the destination, then the manifest is copied,
        so a failure after the truncation leaves the destination broken (``*-broken`` faults)."""
        source, destination = self.full(body.get("source", "")), self.full(body.get("destination", ""))
        if source not in self.models:
            return 404, {"error": f'model "{body.get("source")}" not found'}
        if fault in ("500", "cut"):
            return (500, {"error": "open: input/output error"}) if fault == "500" else (0, "cut")
        with self.lock:
            if fault.endswith("-broken"):
                self.models[destination] = dict(self.models.get(destination, self.models[source]), broken=True)
                return (500, {"error": "write: no space left on device"}) if fault == "500-broken" else (0, "cut")
            if self.models[source].get("broken"):
                return 500, {"error": "unexpected end of JSON input"}
            self.models[destination] = dict(self.models[source], modified_at=now())
        return (0, "cut") if fault == "cut-done" else (200, None)

    def _blob(self, method: str, digest: str, raw: bytes):
        if not re.fullmatch(r"sha256[:-][0-9a-fA-F]{64}", digest):  # manifest.BlobsPath
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
        template = m["template"] or (DEFAULT_TEMPLATE if self.modern else "")  # images.go GetModel
        return {
            "license": "",
            "modelfile": modelfile(name, m, self.modern),
            "template": template,
            "parameters": parameters_text(m),
            "system": m["system"],
            "details": self._details(m),
            "modified_at": m["modified_at"],
            "model_info": dict(m["model_info"]),
            "capabilities": ["completion"] + (["tools"] if ".Tools" in template else []),
        }

    def _create(self, body: dict):
        if era(self.version) < (0, 5, 5):
            return 400, {"error": "path or Modelfile are required"}  # what 0.5.4 and older answer
        files = body.get("files")
        if any(not d for d in (files or {}).values()):
            return 400, {"error": "invalid digest format"}
        if not re.fullmatch(r"[A-Za-z0-9_][\w.-]*(/[\w.-]+)*(:[\w][\w.-]{0,79})?", body.get("model") or ""):
            return 400, {"error": "invalid model name"}
        if not files and not body.get("from"):
            return 400, {"error": "neither 'from' or 'files' was specified"}
        with self.lock:
            self.creates.append(body)
        return 200, self._create_stream(body)

    def _create_stream(self, body: dict):
        """server/create.go CreateHandler / createModel; an existing name is overwritten."""
        files = body.get("files") or {}
        if body.get("from"):
            base = self.models.get(self.full(body["from"]))
            if base is None:
                yield {"error": f"model '{body['from']}' not found", "status": 404}
                return
            blob, info_type, size, params_size = base["blob"], base["quantize"], base["size"], base["parameter_size"]
            info = base["model_info"]
        else:
            yield {"status": "parsing GGUF"}  # create.go ggufLayersWithMediaType, before the blob is opened
            digest = next(iter(files.values()))
            if self.forget_blobs:
                self.blobs.clear()
            if digest not in self.blobs:
                yield {
                    "error": f"open /root/.ollama/models/blobs/{digest.replace(':', '-')}: no such file or directory"
                }
                return
            try:
                header = read_info(self.blobs[digest])
            except NotGGUF:
                yield {"error": "supplied file was not in GGUF format", "status": 400}
                return
            raw_type = header.kv.get("general.file_type", 0)  # fs/ggml KV.FileType: 0 or missing is unknown
            info_type = FILE_TYPE_NAMES.get(int(raw_type), "unknown")
            blob, size = digest, self.blobs[digest].stat().st_size
            params_size = f"{header.parameters / 1e6:.2f}M"
            info = {k: v for k, v in header.kv.items() if k not in ("general.name", "tokenizer.chat_template")}
        quant = (body.get("quantize") or "").upper()
        if quant:
            allowed = ("F16", "BF16", "F32") if self.modern else ("F16", "F32")
            if quant not in QUANT_OK:
                yield {
                    "error": f"unsupported quantization type {quant} - supported types are F32, F16, Q4_K_S, "
                    "Q4_K_M, Q8_0"
                }
                return
            if info_type not in allowed:
                yield {
                    "error": f"quantization is only supported for {' and '.join([', '.join(allowed[:-1]), allowed[-1]])} models"
                }
                return
        if quant or (self.modern and not body.get("from")):  # 0.30+: every GGUF goes through llama-quantize COPY
            status = f"quantizing {info_type} model to {quant}" if quant else "validating GGUF model"
            if self.no_llama_quantize:
                yield {
                    "error": (
                        "" if quant else "failed to validate GGUF with llama-quantize without compatibility patches: "
                    )
                    + "llama-quantize unavailable: llama-quantize not found"
                }
                return
            for done in (0, size // 2, size):
                yield {"status": status, "digest": "0000000000000000000", "total": size, "completed": done}
            yield {"status": "verifying conversion"}
            blob = "sha256:" + hashlib.sha256(f"{blob}{quant or 'COPY'}".encode()).hexdigest()
            if quant:
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
                {**info, "general.file_type": info_type},
            )
        yield {"status": "success"}

    def _generate(self, name: str, body: dict):
        with self.lock:
            self.generates.append(body)
        keep_alive = body.get("keep_alive")
        if not body.get("prompt"):  # load or unload, one object (routes.go GenerateHandler)
            if keep_alive == 0:
                self.loaded.pop(name, None)
                return 200, {"model": name, "created_at": now(), "response": "", "done": True, "done_reason": "unload"}
            self.load(name)
            return 200, {"model": name, "created_at": now(), "response": "", "done": True, "done_reason": "load"}
        m = self.models[name]
        default = ("normal" if m["parameters"].get("stop") else "length") if m["template"].strip() else "leak"
        pieces = tokens(self.behaviour.get(name, default), body["prompt"])
        result = stream(self, name, body, pieces, self.modern)
        self.load(name, 300 if keep_alive is None else 0)
        if keep_alive == 0:
            self.loaded.pop(name, None)
            self.prompt_cache.pop(name, None)
        return result
