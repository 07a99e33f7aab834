"""Deploy a GGUF to Ollama as an immutable build tag, with the base model's chat template.

    python -m stages.deploy_ollama --gguf model-Q4_K_M.gguf --tag build-20261126-2130

The model is ``[ollama] model:<tag>``; ``latest`` moves only when `verify --promote` passes. The GGUF is
uploaded as a blob once (skipped when the server has its digest), then created with TEMPLATE, SYSTEM and
PARAMETERs through the official client (files-based create, Ollama >= 0.5.5). The Modelfile is written
next to the GGUF, so `ollama create web4-agent:TAG -f FILE.Modelfile` reproduces the build by hand.
"""

from __future__ import annotations

import hashlib
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from stages.common.errors import StageError
from stages.common.stage import StageArgumentParser, run_main, stage_config
from stages.ollama import modelfile
from w4tui import ollama_client as oc
from w4tui.events import EventWriter
from w4tui.fsutil import atomic_write_text
from w4tui.gguf_header import UNQUANTIZED, NotGGUF, read_info

TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")
RESERVED = ("latest", "previous")  # moved by promotion and rollback only


def quantize_choice(text: str) -> str:
    choices = {"auto": "auto", "none": "none", **{k.lower(): v for k, v in oc.SERVER_QUANTIZE.items()}}
    if text.lower() not in choices:
        raise ValueError(text)
    return choices[text.lower()]


def build_parser() -> StageArgumentParser:
    p = StageArgumentParser(prog="deploy_ollama", description=__doc__.split("\n")[0])
    p.add_argument("--gguf", required=True, type=Path, help="the GGUF to serve")
    p.add_argument("--tag", required=True, help="build tag, e.g. build-20261126-2130 (not latest/previous)")
    p.add_argument(
        "--quantize",
        type=quantize_choice,
        default="auto",
        metavar="{auto,none,q4_K_M,q4_K_S,q8_0}",
        help="let Ollama quantize an F16/BF16 GGUF; auto: [quantize] type when ollama_fallback is on",
    )
    p.add_argument("--modelfile", type=Path, help="where to write the Modelfile (default: next to the GGUF)")
    return p


class Throttled:
    """Byte progress for one phase, at most two events a second (and always the last)."""

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
        while chunk := fh.read(8 << 20):
            digest.update(chunk)
            progress.add(len(chunk))
    return "sha256:" + digest.hexdigest()


def server_quantize(choice: str, gguf: Path, file_type: str, config) -> str | None:
    """What to ask Ollama to quantize to (None: serve the file as it is)."""
    if choice == "none":
        return None
    if choice != "auto":
        if file_type not in UNQUANTIZED:
            raise StageError(
                f"--quantize {choice}: {gguf} is already {file_type}; Ollama quantizes only F16, BF16 and F32 files"
            )
        return choice
    if file_type not in UNQUANTIZED or not config.quantize.ollama_fallback:
        return None
    if config.quantize.type not in oc.SERVER_QUANTIZE:
        raise StageError(
            f"{gguf} is {file_type} and Ollama cannot quantize to {config.quantize.type} "
            f"(only {', '.join(oc.SERVER_QUANTIZE)})",
            hint="install llama.cpp and run the quantize stage, or pass --quantize none",
        )
    return oc.SERVER_QUANTIZE[config.quantize.type]


def check_tag(tag: str) -> None:
    if tag in RESERVED or not TAG.fullmatch(tag):
        raise StageError(
            f"--tag {tag}: give a build tag like build-20261126-2130 (letters, digits, _ . -); "
            "'latest' and 'previous' move only by verified promotion and rollback"
        )


def body(args, events: EventWriter) -> dict:
    config = stage_config()
    check_tag(args.tag)
    if not args.gguf.is_file():
        raise StageError(f"{args.gguf}: no such file", hint="run the quantize stage first")
    try:
        info = read_info(args.gguf, tensors=False)
    except NotGGUF as exc:
        raise StageError(f"{exc} (deploy needs a GGUF file)") from None
    quantize = server_quantize(args.quantize, args.gguf, info.file_type, config)
    if info.file_type in UNQUANTIZED and not quantize:
        events.log(f"{args.gguf.name} is {info.file_type}: Ollama will serve it unquantized", level="warning")
    model = oc.tag(config, args.tag)
    try:
        return _deploy(args, config, model, quantize, info.file_type, events)
    except oc.OllamaError as exc:
        raise StageError(exc.message, hint=exc.hint or "latest was not touched") from None


def _deploy(args, config, model: str, quantize: str | None, file_type: str, events: EventWriter) -> dict:
    server = oc.require_files_api(config)
    events.log(f"Ollama {server} at {oc.host(config)}")
    existing = oc.digests(config).get(model)
    template, stops, source = oc.base_template(config)
    events.log(
        f"TEMPLATE and stop tokens {stops} from {source}", level="warning" if source.startswith("built-in") else "info"
    )
    params = modelfile.parameters(config, stops)
    modelfile_path = args.modelfile or args.gguf.with_suffix(".Modelfile")
    try:
        text = modelfile.render(
            model, args.gguf, template, config.ollama.system, params, quantize, source, modelfile_path.name
        )
        atomic_write_text(modelfile_path, text)
    except ValueError as exc:
        events.log(f"no Modelfile written: {exc}", level="warning")
        modelfile_path = None
    digest = sha256_digest(args.gguf, events)
    started, uploaded = time.monotonic(), False
    if existing:  # build tags are immutable: only the very same build may be deployed again
        same = oc.show(config, model)
        if quantize or same["weights"] != digest or same.get("template") != template:
            raise StageError(
                f"{model} already exists on the server with other weights or template; build tags are immutable",
                hint=f"choose another --tag, or remove it first: ollama rm {model}",
            )
        events.log(f"{model} is already deployed from this GGUF; nothing to do")
    else:
        uploaded = _upload(config, args.gguf, digest, events)
        _create(config, model, args.gguf.name, digest, template, params, quantize, events)
    _check_deployed(config, model)
    size = args.gguf.stat().st_size
    events.artifact(
        model,
        "ollama",
        parent=str(args.gguf.resolve()),
        digest=oc.digests(config).get(model),
        gguf_digest=digest,
        quant=(quantize or file_type).upper(),
        server_quantize=quantize,
        modelfile=str(modelfile_path) if modelfile_path else None,
        template_from=source,
        server=server,
        host=oc.host(config),
        bytes=size,
    )
    return {"model": model, "uploaded": uploaded, "quantize": quantize, "seconds": round(time.monotonic() - started, 2)}


def _upload(config, path: Path, digest: str, events: EventWriter) -> bool:
    if oc.has_blob(config, digest):
        events.log(f"the server already has {digest[:19]}…; not uploading")
        return False
    oc.push_blob(config, path, digest, Throttled(events, path.stat().st_size, "uploading").add)
    return True


def _create(
    config,
    model: str,
    filename: str,
    digest: str,
    template: str,
    params: dict,
    quantize: str | None,
    events: EventWriter,
) -> None:
    events.log(f"creating {model}" + (f" (Ollama quantizes to {quantize})" if quantize else ""))
    last = 0.0
    try:
        for step, part in enumerate(
            oc.create(
                config,
                model,
                files={filename: digest},
                template=template,
                system=config.ollama.system,
                parameters=params,
                quantize=quantize,
            )
        ):
            status = part.get("status", "")
            if part.get("total"):  # server-side quantization reports bytes
                if time.monotonic() - last > 0.5 or part.get("completed") == part["total"]:
                    last = time.monotonic()
                    events.progress(part.get("completed") or 0, part["total"], "bytes", message=status)
            else:  # "parsing GGUF", "using existing layer sha256:…", "writing manifest", "success"
                events.progress(step + 1, None, "steps", message=f"ollama: {status}")
    except oc.OllamaError as exc:
        detail = exc.message.split(": ", 1)[-1]
        hint = (
            "Ollama quantizes only F16/BF16/F32 GGUFs"
            if "quantiz" in detail
            else "see the server's log (ollama serve, or ~/.ollama/logs/server.log)"
        )
        raise StageError(f"Ollama could not create {model}: {detail}", hint=hint) from None


def _check_deployed(config, model: str) -> None:
    """Never leave a build without a chat template: Ollama would serve it with a bare prompt."""
    info = oc.show(config, model)
    if not (info.get("template") or "").strip() or "stop" not in oc.parse_parameters(info.get("parameters")):
        oc.delete(config, model)
        raise StageError(
            f"{model} came out without a TEMPLATE or stop tokens; it was removed again",
            hint="is the server older than the client? upgrade Ollama",
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stage on ``argv`` (default: sys.argv); returns the exit code."""
    return run_main("deploy", build_parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
