"""Text that is not an answer: random vocabulary, word salad, a few fragments over and over.

A broken quantization or a wrong template still produces text, so "not empty" proves little. Each test
here measures what a real answer always has, tuned on Markdown PDCA plans, Python, shell, TypeScript
and prose (tests/stages/test_salad.py, both sides):

- random tokens: in any 30-60 words of real text, words repeat ("the", "a", names, keywords), and the
  words are words: random vocabulary repeats none and glues fragments into non-words. Letters that
  hop between scripts (Latin, CJK, Hangul, Thai, Arabic…) every few characters say the same.
- word salad: in real prose a sentence end is followed by a capital, "the"/"a"/"an" by a content word,
  and Markdown markers (#, -, 1.) start a line. Shuffled words break these rules all the time.
- repeated fragments: a window of 60 words with only a handful of distinct words.
Code blocks and inline code are left out of the prose rules (code has its own word order).
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from importlib.resources import files

WINDOW, MIN_WORDS = 60, 30
FUNCTION_WORDS = {
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "and",
    "or",
    "is",
    "are",
    "was",
    "were",
    "for",
    "with",
    "on",
    "at",
    "by",
    "from",
    "as",
    "it",
    "that",
    "this",
    "be",
    "not",
}
ABBREVIATIONS = {"e.g.", "i.e.", "etc.", "vs.", "cf.", "approx.", "no.", "fig."}
WORD = re.compile(r"[^\W\d_]+|\d+", re.UNICODE)
PIECE = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")  # camelCase and snake_case split into words


@functools.lru_cache(maxsize=1)
def dictionary() -> frozenset[str]:
    """Whole words of the Qwen2.5 vocabulary (tokens "Ġword"): English and the words of code."""
    vocab = json.loads(files("w4tui").joinpath("data/qwen2.5-tokenizer/vocab.json").read_text(encoding="utf-8"))
    return frozenset(t[1:].lower() for t in vocab if t.startswith("Ġ") and t[1:].isascii() and t[1:].isalpha())


def not_an_answer(text: str) -> str | None:
    """Why ``text`` is not an answer (one short phrase), or None when it reads like one."""
    return _scripts(text) or _vocabulary(text) or _salad(text) or _brackets(text)


def _script(c: str) -> str:
    name = unicodedata.name(c, "?").split(" ")[0]
    return {"HIRAGANA": "KANA", "KATAKANA": "KANA"}.get(name, name)


def _scripts(text: str) -> str | None:
    letters = [_script(c) for c in text if c.isalpha()]
    hops = sum(1 for a, b in zip(letters, letters[1:]) if a != b)
    if len(letters) >= 40 and hops >= 6 and hops / len(letters) > 0.02:
        return f"random tokens: the letters switch script {hops} times ({', '.join(sorted(set(letters))[:5])})"
    return None


def _vocabulary(text: str) -> str | None:
    words = [w for w in WORD.findall(text) if not w.isdigit()]
    known = dictionary()
    for start in range(0, max(1, len(words) - WINDOW + 1), WINDOW // 3):
        window = words[start : start + WINDOW]
        if len(window) < MIN_WORDS:
            break
        distinct = len({w.lower() for w in window}) / len(window)
        pieces = [p.lower() for w in window for p in PIECE.findall(w) if len(p) >= 3]
        share = sum(p in known for p in pieces) / max(1, len(pieces))
        if distinct >= 0.92 and share < 0.85:
            return (
                f"random tokens: {distinct:.0%} of {len(window)} words are distinct and only {share:.0%} "
                f"are words (from {' '.join(window[:6])!r})"
            )
        if distinct < 0.25:
            return f"repeated fragments: {len({w.lower() for w in window})} distinct words in {len(window)}"
    return None


def prose_lines(text: str) -> list[str]:
    """Lines outside fenced/indented code, with inline code replaced by a placeholder word."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and not line.startswith(("    ", "\t")):
            out.append(re.sub(r"`[^`]*`", "CODE", line))
    return out


def _salad(text: str) -> str | None:
    rules = broken = 0
    for line in prose_lines(text):
        tokens = line.split()
        for i, token in enumerate(tokens):
            after = tokens[i + 1] if i + 1 < len(tokens) else None
            low = token.lower()
            if re.fullmatch(r"[A-Za-z][A-Za-z'’)\]]*[.!?]", token) and len(token) > 2 and low not in ABBREVIATIONS:
                rules += 1  # a sentence end: what follows on the line starts a sentence
                broken += bool(after and after[0].islower())
            if low in ("the", "a", "an") and after is not None:
                rules += 1  # a determiner: followed by a content word, not "of" or a full stop
                broken += after.lower().strip(",.;:!?") in FUNCTION_WORDS or not after.strip(",.;:!?)")
            if low in ("the.", "the,", "the;", "the:"):
                rules, broken = rules + 1, broken + 1
            if i > 0 and not line.lstrip().startswith("|") and re.fullmatch(r"#{1,6}|```\w*", token):
                rules, broken = rules + 1, broken + 1  # a Markdown marker in the middle of a line
    if broken >= 3 and broken / rules >= 0.25:
        return f"word salad: {broken} of {rules} word-order rules of prose broken"
    return None


def _brackets(text: str) -> str | None:
    """Shuffled code: brackets that close before they open. Real code and prose never do that
    (list markers like "1)" and smileys aside)."""
    depth, early = {")": 0, "]": 0, "}": 0}, 0
    pairs = {"(": ")", "[": "]", "{": "}"}
    for token in text.split():
        if re.fullmatch(r"\w{1,2}\)|[:;]-?\)", token):
            continue
        for c in token:
            if c in pairs:
                depth[pairs[c]] += 1
            elif c in depth:
                depth[c] -= 1
                if depth[c] < 0:
                    early, depth[c] = early + 1, 0
    return f"word salad: {early} brackets close before they open" if early >= 3 else None
