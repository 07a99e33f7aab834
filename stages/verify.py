"""Verify a deployed build with the configured prompts; with --promote, make it ``latest`` if it passes.

    python -m stages.verify --model web4-agent:build-20261126-2130 --promote

Each prompt streams: time to first token, tokens/s (eval_count / eval_duration), load time and the
answer are recorded. A build fails on an empty answer, an answer cut off by the token limit (the model
does not stop: usually a template or stop-token problem), degenerate repetition ("GGGG…"), chat-template
tokens in the text, or a missing expected substring ([verify] expect). A failure never touches latest.
"""

from __future__ import annotations

import re
import sys
import time

from stages._stage import StageArgumentParser, StageError, main_for, stage_config
from w4tui import ollama_client as oc
from w4tui.events import EventWriter

TEMPLATE_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|fim_prefix|>")
REPEAT = re.compile(r"(.{1,16}?)\1{11,}", re.DOTALL)  # one short unit 12+ times in a row


def build_parser() -> StageArgumentParser:
    v = stage_config().verify
    p = StageArgumentParser(prog="verify", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="the build to verify, e.g. web4-agent:build-20261126-2130")
    p.add_argument("--prompt", action="append", dest="prompts", help="a prompt (repeatable; default: [verify] prompts)")
    p.add_argument("--expect", action="append", default=None, help="a substring every answer must contain")
    p.add_argument("--num_predict", type=int, default=v.num_predict)
    p.add_argument("--promote", action="store_true", help="make the build latest if it passes")
    return p


def problems(text: str, done: dict, expect: list[str], num_predict: int) -> list[str]:
    """What is wrong with one answer (empty list: it passes)."""
    found = []
    if not text.strip():
        found.append("empty answer")
    if done.get("done_reason") == "length" or (done.get("eval_count") or 0) >= num_predict:
        found.append(f"ran into the token limit ({num_predict}) without stopping: check the TEMPLATE and stop tokens")
    if m := REPEAT.search(text):
        found.append(f"degenerate repetition: {m.group(0)[:24]!r}…")
    leaked = [t for t in TEMPLATE_TOKENS if t in text]
    if leaked:
        found.append(f"template tokens in the answer: {', '.join(leaked)}")
    found += [f"expected text missing: {e!r}" for e in expect if e not in text]
    return found


def run_prompt(config, model: str, prompt: str, num_predict: int, events: EventWriter) -> tuple[str, dict, float]:
    started = time.monotonic()
    first, text, done = None, [], {}
    for part in oc.generate_stream(config, model, prompt, options={"num_predict": num_predict}):
        if part.get("response"):
            first = first or time.monotonic() - started
            text.append(part["response"])
        if part.get("done"):
            done = part
    return "".join(text), done, first if first is not None else time.monotonic() - started


def body(args, events: EventWriter) -> dict:
    config = stage_config()
    prompts = args.prompts or config.verify.prompts
    expect = args.expect if args.expect is not None else config.verify.expect
    failures, results = [], {}
    try:
        for i, prompt in enumerate(prompts):
            events.progress(i, len(prompts), "prompts", message=prompt[:60])
            text, done, ttft = run_prompt(config, args.model, prompt, args.num_predict, events)
            eval_s = (done.get("eval_duration") or 0) / 1e9
            tps = round(done.get("eval_count", 0) / eval_s, 1) if eval_s else None
            found = problems(text, done, expect, args.num_predict)
            events.log(f"prompt {i + 1}: {len(text)} chars, first token {ttft:.2f}s, {tps} tok/s"
                       + (f" — FAILED: {'; '.join(found)}" if found else " — ok"))
            print(f"--- {prompt}\n{text}\n", flush=True)  # the answers, for the log
            results.update({f"p{i + 1}_ttft_s": round(ttft, 3), f"p{i + 1}_tokens_per_s": tps,
                            f"p{i + 1}_load_s": round((done.get("load_duration") or 0) / 1e9, 3),
                            f"p{i + 1}_eval_count": done.get("eval_count"), f"p{i + 1}_chars": len(text)})
            failures += [f"prompt {i + 1}: {p}" for p in found]
        events.progress(len(prompts), len(prompts), "prompts")
        passed = not failures
        promoted = None
        if passed and args.promote:
            promoted = oc.promote(config, args.model)
            events.log(promoted)
    except oc.OllamaError as exc:
        raise StageError(str(exc)) from None
    events.artifact(args.model, "verified", passed=passed, promoted=bool(promoted), prompts=len(prompts),
                    failures=" | ".join(failures) or None, **results)
    if not passed:
        raise StageError(f"{args.model} failed verification: {failures[0]}"
                         + (f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""),
                         hint="latest was not touched")
    return {"passed": True, "promoted": bool(promoted), **results}


main = main_for("verify", build_parser, body)

if __name__ == "__main__":
    sys.exit(main())
