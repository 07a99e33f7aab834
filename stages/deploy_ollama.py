"""Deploy a GGUF to Ollama as an immutable build tag, with the base model's chat template.

    python -m stages.deploy_ollama --gguf model-Q4_K_M.gguf --tag build-20261126-2130

The model is ``[ollama] model:<tag>``; ``latest`` moves only when `verify --promote` passes. The blob is
uploaded once (skipped when the server has its digest) and the Modelfile is written next to the GGUF,
so `ollama create web4-agent:TAG -f FILE.Modelfile` reproduces the build by hand.
"""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

from stages._stage import StageArgumentParser, StageError, main_for, stage_config
from stages.quantize import input_type
from w4tui import ollama_client as oc
from w4tui.events import EventWriter
from w4tui.fsutil import atomic_write_text

CHUNK = 1 << 20


def build_parser() -> StageArgumentParser:
    p = StageArgumentParser(prog="deploy_ollama", description=__doc__.split("\n")[0])
    p.add_argument("--gguf", required=True, type=Path, help="the GGUF to serve")
    p.add_argument("--tag", required=True, help="build tag, e.g. build-20261126-2130 (not 'latest')")
    p.add_argument("--quantize", help="let Ollama quantize (q4_K_M, q4_K_S, q8_0); default: when the GGUF is "
                                      "F16/BF16 and [quantize] ollama_fallback is on")
    return p


def modelfile(gguf: Path, template: str, stops: list[str], system: str, parameters: dict) -> str:
    lines = [f"FROM {gguf.resolve()}", f'TEMPLATE """{template}"""', f'SYSTEM """{system}"""']
    lines += [f"PARAMETER {k} {v}" for k, v in parameters.items()]
    lines += [f'PARAMETER stop "{s}"' for s in stops]
    return "\n".join(lines) + "\n"


class Throttled:
    """Byte progress for one phase, at most two events a second."""

    def __init__(self, events: EventWriter, total: int, message: str) -> None:
        self.events, self.total, self.message, self.done, self.last = events, total, message, 0, 0.0

    def add(self, n: int) -> None:
        self.done += n
        if time.monotonic() - self.last > 0.5 or self.done >= self.total:
            self.last = time.monotonic()
            self.events.progress(self.done, self.total, "bytes", message=self.message)


def sha256_digest(path: Path, events: EventWriter) -> str:
    digest, progress = hashlib.sha256(), Throttled(events, path.stat().st_size, "hashing")
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK * 8):
            digest.update(chunk)
            progress.add(len(chunk))
    return "sha256:" + digest.hexdigest()


def upload(config, path: Path, digest: str, events: EventWriter) -> bool:
    """Upload the blob unless the server has it; True when it was sent."""
    c = oc.client(config, timeout=None)
    head = oc.call(config, c._client.head, f"/api/blobs/{digest}")
    if head.status_code == 200:
        events.log(f"the server already has {digest[:19]}…; not uploading")
        return False
    progress = Throttled(events, path.stat().st_size, "uploading")

    def chunks():
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK * 4):
                progress.add(len(chunk))
                yield chunk

    response = oc.call(config, c._client.post, f"/api/blobs/{digest}", content=chunks())
    if response.status_code not in (200, 201):
        raise StageError(f"Ollama refused the upload of {path.name}: HTTP {response.status_code} {response.text[:200]}")
    return True


def body(args, events: EventWriter) -> dict:
    config = stage_config()
    if args.tag in ("latest", "previous") or ":" in args.tag:
        raise StageError(f"--tag {args.tag}: give a build tag like build-20261126-2130; "
                         "'latest' moves only by verified promotion")
    if not args.gguf.is_file():
        raise StageError(f"{args.gguf}: no such file", hint="run the quantize stage first")
    quantize = args.quantize
    if quantize is None and config.quantize.ollama_fallback and input_type(args.gguf) in ("F16", "BF16"):
        quantize = config.quantize.type.lower() if config.quantize.type in ("Q4_K_M", "Q4_K_S", "Q8_0") else None
    model = oc.tag(config, args.tag)
    try:
        server = oc.require_files_api(config)
        events.log(f"Ollama {server} at {oc.host(config)}")
        template, stops, source = oc.base_template(config)
        events.log(f"TEMPLATE and {len(stops)} stop tokens from {source}")
        params = {k: v for k, v in vars(config.ollama.parameters).items()}
        text = modelfile(args.gguf, template, stops, config.ollama.system, params)
        modelfile_path = args.gguf.with_suffix(".Modelfile")
        atomic_write_text(modelfile_path, text)
        digest = sha256_digest(args.gguf, events)
        uploaded = upload(config, args.gguf, digest, events)
        c = oc.client(config, timeout=None)
        stream = oc.call(config, c.create, model=model, files={args.gguf.name: digest}, template=template,
                         system=config.ollama.system, parameters={**params, "stop": stops}, quantize=quantize,
                         stream=True)
        started = time.monotonic()
        for part in oc.iterate(config, stream):  # an error inside the stream raises here
            if part.total:
                events.progress(part.completed or 0, part.total, "bytes", message=part.status)
            else:
                events.log(f"ollama: {part.status}")
    except oc.OllamaError as exc:
        raise StageError(str(exc).replace(" (HTTP 200)", "")) from None
    events.artifact(model, "ollama", digest=digest, parent=str(args.gguf.resolve()), modelfile=str(modelfile_path),
                    quantize=quantize, template_from=source, server=server)
    return {"model": model, "uploaded": uploaded, "create_s": round(time.monotonic() - started, 2)}


main = main_for("deploy", build_parser, body)

if __name__ == "__main__":
    sys.exit(main())
