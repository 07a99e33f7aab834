"""What deploy refuses before it uploads anything, and the fixes it names: a build tag the server
would misread, a quantization the server cannot do, and create errors turned into hints."""

from __future__ import annotations

from pathlib import Path

from core.errors import StageError
from core.gguf_header import GGUFInfo
from core.ollama import client as oc
from core.ollama.names import name_problem, tag_problem
from core.ollama.promote import POINTERS

F16_FIX = "convert with --outtype f16 (python -m stages.convert_gguf ... --outtype f16), or quantize it with llama.cpp"


def check_tag(config, tag: str) -> None:
    problem = tag_problem(tag) or name_problem(oc.tag(config, tag))
    if tag in POINTERS or problem:
        raise StageError(
            f"--tag {tag}: "
            + (problem or "'latest' and 'previous' move only by verified promotion and rollback")
            + "; give a build tag like build-20261126-2130"
        )


def server_file_type(info: GGUFInfo) -> str:
    """The file type as the server reads it: fs/ggml/ggml.go KV.FileType() takes a general.file_type of
    0 (F32) or none at all as unknown, and create.go then refuses to quantize it."""
    value = info.kv.get("general.file_type")
    return "unknown" if not value else info.file_type


def server_quantize(choice: str, gguf: Path, info: GGUFInfo, config, server: str) -> str | None:
    """What to ask Ollama to quantize to (None: serve the file as it is); StageError for what it cannot."""
    file_type = info.file_type
    if choice == "none":
        return None
    if choice == "auto":
        if file_type not in ("F32", "F16", "BF16") or not config.quantize.ollama_fallback:
            return None
        if config.quantize.type not in oc.SERVER_QUANTIZE:
            raise StageError(
                f"{gguf} is {file_type} and Ollama cannot quantize to {config.quantize.type} "
                f"(only {', '.join(oc.SERVER_QUANTIZE)})",
                hint="install llama.cpp and run the quantize stage, or pass --quantize none",
            )
        choice = oc.SERVER_QUANTIZE[config.quantize.type]
    elif file_type not in ("F32", "F16", "BF16"):
        raise StageError(
            f"--quantize {choice}: {gguf} is already {file_type}; Ollama quantizes only F16 and BF16 files",
            hint="deploy it as it is (--quantize none)",
        )
    # server/create.go: "quantization is only supported for F16, BF16 and F32 models" (0.30+; F16 and
    # F32 before), where F32 and a missing general.file_type read as unknown (fs/ggml/ggml.go)
    readable = server_file_type(info)
    if readable == "unknown":
        what = "F32" if "general.file_type" in info.kv else "without general.file_type"
        raise StageError(
            f"{gguf} is {what}, which Ollama reads as an unknown file type and will not quantize (--quantize {choice})",
            hint=F16_FIX + "; or deploy it unquantized: --quantize none",
        )
    if readable == "BF16" and oc.parse_version(server) < (0, 30, 0):
        raise StageError(
            f"Ollama {server} quantizes only F16 GGUFs (BF16 from 0.30 on), and {gguf} is BF16",
            hint=F16_FIX + "; or upgrade Ollama",
        )
    return choice


def create_hint(detail: str) -> str:
    """The fix for an error inside the create stream."""
    # create.go ggufLayersWithMediaType opens the blob after "parsing GGUF"; routes.go Serve prunes
    # unused blobs (PruneLayers) when the server starts
    if "no such file or directory" in detail and "blobs" in detail:
        return (
            "the server no longer has the uploaded blob (it prunes unused blobs when it restarts); "
            "run deploy again: it uploads the GGUF again"
        )
    if "llama-quantize" in detail:  # quantization.go findLlamaQuantize, run by copyLayerWithLlamaQuantize
        return "Ollama 0.30+ runs llama-quantize on every GGUF it creates and this install has none: reinstall Ollama"
    if "quantiz" in detail:
        return "Ollama quantizes only F16 (and from 0.30 BF16) GGUFs"
    return "see the server's log (ollama serve, or ~/.ollama/logs/server.log)"
