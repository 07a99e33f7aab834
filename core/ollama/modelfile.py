"""Modelfile text as Ollama writes and reads it (``parser/parser.go``), standard library only: the
show parser of the client and the Modelfile deploy writes use the same rules, so what deploy writes
``ollama create -f`` reads back unchanged.

parser.go ``quote()``: a value is written bare unless it has a newline or a leading/trailing space;
then ``"…"``, or ``\"\"\"…\"\"\"`` when it also has a ``"``. ``unquote()`` strips the surrounding quotes
only (no backslash escapes). ``ParseFile``: a value ends at the first line break after which the text
so far unquotes; unprintable characters other than tab and line breaks are dropped.
"""

from __future__ import annotations

COMMANDS = (
    "from",
    "license",
    "template",
    "system",
    "adapter",
    "draft",
    "renderer",
    "parser",
    "parameter",
    "message",
    "requires",
)


def unquote(s: str) -> tuple[str, bool]:
    """parser.go unquote: (value, complete)."""
    if s.startswith('"""'):
        return (s[3:-3], True) if len(s) >= 6 and s.endswith('"""') else ("", False)
    if s.startswith('"'):
        return (s[1:-1], True) if len(s) >= 2 and s.endswith('"') else ("", False)
    return s, True


def server_quote(s: str) -> str:
    """parser.go quote, as ``ollama show`` formats a value."""
    if "\n" in s or s.startswith(" ") or s.endswith(" "):
        return f'"""{s}"""' if '"' in s else f'"{s}"'
    return s


def quote(s: str) -> str:
    """A value quoted so that parser.go reads back exactly ``s``; ValueError when no quoting can."""
    bare = not any(c in s for c in "\r\n") and s == s.strip(" \t") and not s.startswith('"') and s != ""
    candidates = [s] if bare else []
    candidates += [f'"{s}"'] if '"' not in s else []
    candidates.append(f'"""{s}"""')
    for text in candidates:
        if parse_value(text) == s:
            return text
    raise ValueError("it cannot be written in a Modelfile (Ollama's parser would cut it short or drop characters)")


def parse_value(text: str) -> str | None:
    """The value parser.go reads from ``text`` (a command's value up to the end), None if incomplete."""
    try:
        commands = parse("SYSTEM " + text)
    except ValueError:
        return None
    return commands[0][1] if len(commands) == 1 else None


def parse(text: str) -> list[tuple[str, str]]:
    """parser.go ParseFile, minus the FROM requirement: (command, value) pairs; a PARAMETER is
    (its key, value). Raises ValueError on text the server would refuse."""
    out: list[tuple[str, str]] = []
    state, buf, name = "nil", "", ""
    for ch in text + "\n":
        newline, space = ch in "\r\n", ch in " \t"
        if state == "value":
            if newline or space:
                value, ok = unquote(buf.strip(" \t\r\n"))  # Go's TrimSpace
                if not ok or space:
                    buf += ch
                    continue
                out.append((name, value))
                state, buf = "nil", ""
                continue
            buf += ch if ch.isprintable() else ""
        elif state == "comment":
            state = "nil" if newline else "comment"
        elif state == "nil":
            if ch == "#":
                state = "comment"
            elif not (newline or space):
                state, buf = "name", ch
        elif state == "name":
            if ch.isascii() and ch.isalpha():
                buf += ch
            elif space and buf.lower() in COMMANDS:
                name, state = ("parameter_key", "param") if buf.lower() == "parameter" else (buf.lower(), "value")
                buf = ""
            else:
                raise ValueError(f"unknown Modelfile command {buf!r}")
        elif state == "param":
            if ch.isascii() and (ch.isalnum() or ch == "_"):
                buf += ch
            elif space and buf:
                name, state, buf = buf, "value", ""
            else:
                raise ValueError("a PARAMETER line needs a name and a value")
    if state not in ("nil", "comment"):
        raise ValueError("the Modelfile ends inside an unclosed quote")
    return out
