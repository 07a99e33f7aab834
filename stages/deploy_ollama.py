"""Deploy a GGUF to Ollama as an immutable build tag, with the base model's chat template.

    python -m stages.deploy_ollama --gguf model-Q4_K_M.gguf --tag build-20261126-2130

The model is ``[ollama] model:<tag>``; ``latest`` moves only when `verify --promote` passes. The GGUF is
uploaded as a blob once (skipped when the server has its digest), then created with TEMPLATE, SYSTEM and
PARAMETERs through the official client (files-based create, Ollama >= 0.5.5). The Modelfile is written
next to the GGUF, so `ollama create web4-agent:TAG -f FILE.Modelfile` reproduces the build by hand.

Since Ollama 0.30 the server rewrites every GGUF it creates from (server/create.go
copyLayerWithLlamaQuantize, status "validating GGUF model"): the served weights have a new digest, so
a repeat deploy is recognised from deploy's own record (stages/ollama/builds.py), not from them.
"""

from __future__ import annotations

import hashlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from core import parsers, units
from core.errors import StageError
from core.events import EventWriter
from core.fsutil import atomic_write_text
from core.gguf_header import UNQUANTIZED, NotGGUF, read_info
from core.ollama import client as oc
from core.parsers import StageArgumentParser
from stages.common.outputs import check_output
from stages.common.stage import run_main, stage_config
from stages.ollama import builds, modelfile
from stages.ollama.deploy_rules import check_tag, create_hint, server_quantize


def build_parser() -> StageArgumentParser:
    return parsers.deploy()


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


def body(args, events: EventWriter) -> dict:
    config = stage_config()
    check_tag(config, args.tag)
    if not args.gguf.is_file():
        raise StageError(f"{args.gguf}: no such file", hint="run the quantize stage first")
    try:
        info = read_info(args.gguf, tensors=False)
    except NotGGUF as exc:
        raise StageError(f"{exc} (deploy needs a GGUF file)") from None
    model = oc.tag(config, args.tag)
    try:
        server = oc.require_files_api(config)
        quantize = server_quantize(args.quantize, args.gguf, info, config, server)
        if info.file_type in UNQUANTIZED and not quantize:
            events.log(f"{args.gguf.name} is {info.file_type}: Ollama will serve it unquantized", level="warning")
        return _deploy(args, config, model, quantize, info.file_type, server, events)
    except oc.OllamaError as exc:
        raise StageError(exc.message, hint=exc.hint or "latest was not touched") from None


def _deploy(args, config, model: str, quantize: str | None, file_type: str, server: str, events: EventWriter) -> dict:
    host = oc.host(config)
    events.log(f"Ollama {server} at {host}")
    # server/routes.go getExistingName matches names case-insensitively: "B1" would overwrite "b1"
    same_name = [n for n in oc.digests(config) if n.lower() == model.lower() and n != model]
    if same_name:
        raise StageError(
            f"{model}: the server already has {same_name[0]}, and Ollama treats names that differ "
            "only in case as the same model (a create would replace it)",
            hint="choose another --tag",
        )
    existing = oc.digests(config).get(model)
    template, stops, source, stops_from = oc.base_template(config)
    events.log(f"TEMPLATE from {source}", level="warning" if source.startswith("built-in") else "info")
    events.log(f"stop tokens {stops} from {stops_from}", level="warning" if stops_from != source else "info")
    params = modelfile.parameters(config, stops)
    modelfile_path = args.modelfile or args.gguf.with_suffix(".Modelfile")
    # Only a Modelfile an earlier deploy wrote may be replaced: never the user's own (--modelfile PATH).
    check_output(modelfile_path, "file", inputs=[args.gguf], own=modelfile.written_by_us, what="the Modelfile",
                 flag="--modelfile", config=config)  # fmt: skip
    try:
        text = modelfile.render(
            model, args.gguf, template, config.ollama.system, params, quantize, source, modelfile_path.name
        )
        atomic_write_text(modelfile_path, text)
    except ValueError as exc:
        events.log(f"no Modelfile written: {exc}", level="warning")
        modelfile_path = None
    digest = sha256_digest(args.gguf, events)
    print_ = builds.fingerprint(digest, template, quantize)
    started, uploaded = time.monotonic(), False
    if existing:  # build tags are immutable: only the very same build may be deployed again
        if not builds.same_build(config, host, model, existing, print_, oc.show(config, model)):
            raise StageError(
                f"{model} already exists on the server and is not this build (other GGUF, template or "
                "quantization, or not deployed from here); build tags are immutable",
                hint=f"choose another --tag, or remove it first: ollama rm {model}",
            )
        events.log(f"{model} is already deployed from this GGUF; nothing to do")
    else:
        uploaded = _upload(config, args.gguf, digest, events)
        _create(config, model, args.gguf.name, digest, template, params, quantize, events)
    served = _check_deployed(config, model)
    size = args.gguf.stat().st_size
    listed = oc.digests(config).get(model)
    builds.remember(config, host, model, listed, print_)
    if served["weights"] != digest and not existing:
        events.log(
            f"Ollama rewrote the GGUF while creating {model} ("
            + (f"its {quantize} quantization" if quantize else "llama-quantize COPY, Ollama 0.30+")
            + f"): it serves {(served['weights'] or 'new weights')[:19]}…; the uploaded blob {digest[:19]}… "
            f"({units.size(size)}) stays in the server's blob store until the server restarts "
            "(it then prunes unused blobs older than an hour)"
        )
    events.artifact(
        model,
        "ollama",
        parent=str(args.gguf.resolve()),
        digest=listed,
        gguf_digest=digest,
        weights_digest=served["weights"],
        quant=(quantize or file_type).upper(),
        server_quantize=quantize,
        modelfile=str(modelfile_path) if modelfile_path else None,
        template_from=source,
        stops_from=stops_from,
        server=server,
        host=host,
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
            if part.get("total"):  # bytes: "quantizing F16 model to Q4_K_M", "validating GGUF model" (0.30+)
                if time.monotonic() - last > 0.5 or part.get("completed") == part["total"]:
                    last = time.monotonic()
                    events.progress(part.get("completed") or 0, part["total"], "bytes", message=status)
            else:  # "parsing GGUF", "using existing layer sha256:…", "writing manifest", "success"
                events.progress(step + 1, None, "steps", message=f"ollama: {status}")
    except oc.OllamaError as exc:
        detail = exc.message.split(": ", 1)[-1]  # e.g. "parsing GGUF" then "open …/blobs/sha256-…: no such file"
        raise StageError(f"Ollama could not create {model}: {detail}", hint=create_hint(detail)) from None


def _check_deployed(config, model: str) -> dict:
    """Never leave a build without a chat template: Ollama would serve it with a bare prompt (and 0.30+
    reports that as ``{{ .Prompt }}``, server/images.go)."""
    info = oc.show(config, model)
    if oc.template_problem(info.get("template") or "", info) or "stop" not in oc.parse_parameters(
        info.get("parameters")
    ):
        oc.delete(config, model)
        raise StageError(
            f"{model} came out without a TEMPLATE or stop tokens; it was removed again",
            hint="is the server older than the client? upgrade Ollama",
        )
    return info


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stage on ``argv`` (default: sys.argv); returns the exit code."""
    return run_main("deploy", build_parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
