"""What makes an answer from a deployed build look broken. Pure functions over the answer text and the
final /api/generate part, so each case is easy to test and to explain in one line.

Broken builds show up as: nothing at all (a wrong template or a bad quantization), an answer that never
stops (no stop token: the model talks on into the next turn), degenerate repetition ("GGGG…", one
phrase over and over; a real server ends such a stream with no final part), a template problem, text
that is not an answer (random tokens, word salad: salad.py), or a missing substring the person said a
good answer contains.

A template problem shows as template tokens in the text on servers that print them (ollama#6823); a
server that does not (0.30+: llm/llama_server.go passes no --special) shows it as a made-up next turn
("user" / "assistant" alone on a line) or as an answer that continues the prompt's sentence.
"""

from __future__ import annotations

import re

import numpy as np

from stages.ollama.salad import not_an_answer

TEMPLATE_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)


ROLE_LINE = re.compile(r"^(user|assistant|system)\s*$", re.M)


def problems(
    text: str, final: dict, num_predict: int, expect: list[str] = (), prompt: str = "", answer_check: bool = True
) -> list[str]:
    """What is wrong with one answer (an empty list: it passes). ``final`` has ``done`` False when the
    stream ended without its final part."""
    found = []
    if not text.strip():
        found.append("empty answer")
    if final.get("done") is False:
        found.append(
            "the stream ended without Ollama's final part: the server cut off a degenerate "
            "repetition (a token repeated over 30 times)"
        )
    if final.get("done_reason") == "length" or (
        not final.get("done_reason") and (final.get("eval_count") or 0) >= num_predict
    ):
        found.append(
            f"ran into the token limit ({num_predict}) without stopping: check the TEMPLATE and stop "
            "tokens (or raise [verify] num_predict if the answers are long)"
        )
    if repeat := repetition(text):
        found.append(f"degenerate repetition: {repeat!r}")
    if leaked := [t for t in TEMPLATE_TOKENS if t in text]:
        found.append(f"template tokens in the answer: {', '.join(leaked)} (wrong or missing TEMPLATE)")
    elif turn := ROLE_LINE.search(text):
        found.append(f"the answer makes up a next turn (a line {turn.group(1)!r}): wrong or missing TEMPLATE")
    elif re.match(r"[ \t]*[,.;:)]|[ \t]+[a-z]", text) and prompt.strip()[-1:] not in ".?!:":
        found.append(
            f"the answer continues the prompt ({text.strip()[:30]!r}…) instead of answering: wrong or missing TEMPLATE"
        )
    if answer_check and text.strip() and (salad := not_an_answer(text)):
        found.append(f"not an answer: {salad}")
    found += [f"expected text missing: {e!r}" for e in expect if e not in text]
    return found


def repetition(text: str, max_period: int = 256) -> str | None:
    """The start of a degenerate repetition in ``text``, or None.

    A stretch that repeats with period p counts as degenerate when it is a unit with a letter or digit
    repeated 8+ times over 48+ characters ("GGGG…", "the the the…"), a unit of 16+ characters repeated
    4+ times (the same sentence or line again and again), or anything repeated over 256+ characters.
    Indentation, table rules and comment banners are shorter than that, so they pass.
    """
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    n = len(codes)
    for p in range(1, min(max_period, n // 2) + 1):
        same = np.concatenate(([0], (codes[:-p] == codes[p:]).astype(np.int8), [0]))
        edges = np.flatnonzero(np.diff(same))
        for start, stop in zip(edges[::2], edges[1::2]):
            span = stop - start + p  # characters covered by the repeating stretch
            repeats = span / p
            unit = text[start : start + p]
            if (unit + unit).find(unit, 1) < p:  # the unit repeats itself: judged at its own, smaller period
                continue
            if (
                (repeats >= 8 and span >= 48 and any(c.isalnum() for c in unit))
                or (p >= 16 and repeats >= 4)
                or (span >= 256 and repeats >= 8)
            ):
                sample = text[start : start + min(span, 40)]
                return sample + ("…" if span > 40 else "")
    return None
