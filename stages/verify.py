"""Verify a deployed build with the configured prompts; with --promote, make it ``latest`` if it passes.

    python -m stages.verify --model web4-agent:build-20261126-2130 --promote

Each prompt streams: time to first token, tokens/s (eval_count / eval_duration), load time and the
answer are recorded (events, and a JSON report beside the run's events). A build fails on an empty
answer, an answer cut off by the token limit (the model does not stop: usually a template or stop-token
problem), degenerate repetition ("GGGG…"), chat-template tokens in the text, or a missing expected
substring ([verify.expect], --expect). A failure is an error event and exit 1, and never touches latest.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from core import parsers
from core.errors import StageError
from core.events import ENV_EVENTS, EventWriter
from core.fsutil import atomic_write_text
from core.ollama import client as oc
from core.ollama import promote as op
from core.parsers import StageArgumentParser
from stages.common.stage import run_main, stage_config
from stages.ollama import inference, regression
from stages.ollama.checks import problems


def build_parser() -> StageArgumentParser:
    return parsers.verify(stage_config())


def keep_alive(text: str) -> str | int:
    """Ollama takes a Go duration ("5m") or a number of seconds; a bare "0" or "-1" must be a number."""
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def run_prompt(config, model: str, prompt: str, num_predict: int) -> dict:
    """One streamed answer and its figures.

    llm/llama_server.go ends a stream with no ``done`` part when a token repeats more than 30 times:
    ``done`` stays False. ``prompt_eval_count`` counts the runner's cached prompt tokens too, while
    ``prompt_eval_duration`` covers only the new ones, so prompt tokens/s is given only when the model
    was not loaded before (a fresh runner has no cache)."""
    fresh = model not in {m["model"] for m in oc.running(config)}
    started = time.monotonic()
    first, pieces, final = None, [], {}
    for part in oc.generate_stream(
        config, model, prompt, options={"num_predict": num_predict}, keep_alive=keep_alive(config.verify.keep_alive)
    ):
        if part.get("response"):
            first = first if first is not None else time.monotonic() - started
            pieces.append(part["response"])
        if part.get("done"):
            final = part
    eval_s = (final.get("eval_duration") or 0) / 1e9
    prompt_s = (final.get("prompt_eval_duration") or 0) / 1e9
    return {
        "prompt": prompt,
        "answer": "".join(pieces),
        "done_reason": final.get("done_reason"),
        "ttft_s": round(first, 3) if first is not None else None,
        "tokens_per_s": round(final.get("eval_count", 0) / eval_s, 1) if eval_s else None,
        "prompt_tokens_per_s": round(final.get("prompt_eval_count", 0) / prompt_s, 1) if prompt_s and fresh else None,
        "prompt_eval_count": final.get("prompt_eval_count"),
        "prompt_cache": "none (fresh load)" if fresh else "possible: prompt_eval_count includes cached tokens",
        "done": bool(final),
        "load_s": round((final.get("load_duration") or 0) / 1e9, 3),
        "eval_count": final.get("eval_count"),
        "total_s": round(time.monotonic() - started, 3),
    }


def expectations(config, prompts: list[str], extra: list[str]) -> list[list[str]]:
    table = config.verify.expect
    unknown = [key for key in table if key not in config.verify.prompts]
    if unknown:
        raise StageError(
            f"{config.file}: [verify.expect] names a prompt that is not in [verify] prompts: {unknown[0]!r}",
            hint="the keys must be the prompts, word for word",
        )
    return [list(table.get(prompt, [])) + extra for prompt in prompts]


def body(args, events: EventWriter) -> dict:
    config = stage_config()
    prompts = args.prompts or config.verify.prompts
    expect = expectations(config, prompts, args.expect)
    results, failures, guard = [], [], None
    try:
        oc.show(config, args.model)  # a clear "not found" before any prompt
        for i, prompt in enumerate(prompts):
            events.progress(i, len(prompts), "prompts", message=prompt[:60])
            result = run_prompt(config, args.model, prompt, args.num_predict)
            result["problems"] = problems(
                result["answer"], result, args.num_predict, expect[i], prompt, answer_check=not args.no_answer_check
            )
            results.append(result)
            failures += [f"prompt {i + 1}: {p}" for p in result["problems"]]
            events.metrics(
                prompt=i + 1,
                ttft_s=result["ttft_s"],
                tokens_per_second=result["tokens_per_s"],
                load_s=result["load_s"],
                eval_count=result["eval_count"],
            )
            events.log(
                f"prompt {i + 1}: {len(result['answer'])} chars, first token {result['ttft_s']} s, "
                f"{result['tokens_per_s']} tok/s"
                + (f" — FAILED: {'; '.join(result['problems'])}" if result["problems"] else " — ok")
            )
            print(f"--- {prompt}\n{result['answer']}\n", flush=True)  # the answers, for output.log
        events.progress(len(prompts), len(prompts), "prompts")
        # Inference figures beside [verify] expect_* (stages/ollama/inference.py): a warning, never a failure.
        measured = inference.measure(config, args.model, results)
        for warning in measured["warnings"]:
            events.log(warning, level="warning")
        # The forgetting guard (stages/ollama/regression.py), on every build that answers well: with
        # --promote, a score more than [verify] max_regression below latest's blocks the promotion.
        guard = regression.guard(config, args.model, events) if not failures else None
        if guard and guard["blocked"] and args.promote:
            failures.append(regression.blocked_message(guard, config.verify.max_regression))
        passed = not failures
        promoted = op.promote(config, args.model) if passed and args.promote else None
        if promoted:
            events.log(promoted)
    except oc.OllamaError as exc:
        raise StageError(exc.message, hint=exc.hint or "latest was not touched") from None
    report = _write_report(args, results, passed, bool(promoted))
    figures = {
        f"p{i + 1}_{key}": r[key]
        for i, r in enumerate(results)
        for key in ("ttft_s", "tokens_per_s", "load_s", "eval_count")
    }
    first = results[0]
    events.artifact(
        args.model,
        "verified",
        parent=args.model,
        passed=passed,
        promoted=bool(promoted),
        prompts=len(prompts),
        failures=" | ".join(failures) or None,
        report=report,
        ttft_s=first["ttft_s"],
        tokens_per_second=first["tokens_per_s"],
        load_s=first["load_s"],
        **figures,
        **regression.fields(guard),
        **inference.fields(measured),
    )
    if not passed:
        raise StageError(
            f"{args.model} failed verification: {failures[0]}"
            + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""),
            hint="latest was not touched",
        )
    return {"passed": True, "promoted": bool(promoted), **figures}


def _write_report(args, results: list[dict], passed: bool, promoted: bool) -> str | None:
    path = args.report
    if path is None and os.environ.get(ENV_EVENTS):
        path = Path(os.environ[ENV_EVENTS]).parent / "verify.json"
    if path is None:
        return None
    atomic_write_text(
        path,
        json.dumps(
            {
                "model": args.model,
                "passed": passed,
                "promoted": promoted,
                "num_predict": args.num_predict,
                "results": results,
            },
            indent=2,
        )
        + "\n",
    )
    return str(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stage on ``argv`` (default: sys.argv); returns the exit code."""
    return run_main("verify", build_parser, body, argv)


if __name__ == "__main__":
    sys.exit(main())
