"""Realistic answers a good build gives (Markdown PDCA plans, Python, shell, TypeScript, prose) and the
garbage a broken one gives (random Qwen vocabulary decoded, shuffled words, repeated fragments), for the
verify checks' tests on both sides."""

from __future__ import annotations

import random
from pathlib import Path

PDCA_PLAN = """# PDCA: Creating a Web4 component

## Plan
- **Goal:** add a `UserCard` component that renders a user's name, avatar and status.
- **Scope:** the component, its model and one unit test; styling stays in the design system.
- **Risks:** the avatar URL may be missing, so the component needs a fallback image.
- **Success criteria:** `npm test` is green and the story renders without warnings.

## Do
1. Create `src/components/UserCard/UserCard.ts` with a `UserCard` class that implements `Component`.
2. Add the model interface `UserCardModel` (name, avatarUrl, status).
3. Write `UserCard.test.ts`: it renders the name, and the fallback when `avatarUrl` is empty.
4. Register the component in `src/components/index.ts`.

## Check
| Criterion | Result |
|-----------|--------|
| Unit tests pass | ✅ 4 of 4 |
| No console warnings | ✅ |
| Bundle size below 2 kB | ⚠️ 2.3 kB, the SVG icon is inlined |

## Act
- Move the icon into the sprite sheet to bring the bundle under 2 kB.
- Keep the fallback pattern: document it in `docs/components.md` so the next component reuses it.
- Next cycle: add keyboard focus styles and an accessibility test.
"""

PYTHON_CODE = '''Here is a small script that counts the words in every Markdown file under a directory:

```python
import argparse
import collections
import pathlib
import re

WORD = re.compile(r"[A-Za-z']+")


def count_words(root: pathlib.Path) -> collections.Counter[str]:
    """Word frequencies over all *.md files below root."""
    counts: collections.Counter[str] = collections.Counter()
    for path in sorted(root.rglob("*.md")):
        text = path.read_text(encoding="utf-8", errors="replace")
        counts.update(w.lower() for w in WORD.findall(text))
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=pathlib.Path)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        parser.error(f"{args.root} is not a directory")
    for word, n in count_words(args.root).most_common(args.top):
        print(f"{n:6d}  {word}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
```

Run it with `python count_words.py docs --top 20`. It reads each file once, so memory stays small
even for large documentation trees.
'''

SHELL_SNIPPET = """To rebuild and serve the model after training, run these steps from the project root:

```bash
#!/usr/bin/env bash
set -euo pipefail

MODEL=web4-agent
TAG="build-$(date +%Y%m%d-%H%M)"

python -m stages.merge_lora --adapter outputs/adapters/latest --output "outputs/merged/$TAG"
python -m stages.convert_gguf --model "outputs/merged/$TAG" --output "outputs/gguf/$TAG-f16.gguf" --outtype f16
llama-quantize "outputs/gguf/$TAG-f16.gguf" "outputs/gguf/$TAG-Q4_K_M.gguf" Q4_K_M
ollama create "$MODEL:$TAG" -f "outputs/gguf/$TAG-Q4_K_M.Modelfile"
ollama run "$MODEL:$TAG" "Create a PDCA for component creation" | head -n 20
```

If `ollama create` fails with `unsupported architecture`, upgrade Ollama first (`brew upgrade ollama`).
"""

TS_COMPONENT = """```ts
export interface ButtonModel {
  label: string;
  enabled: boolean;
  onClick?: () => void;
}

export class Button implements Component<ButtonModel> {
  constructor(private readonly model: ButtonModel) {}

  render(): string {
    const disabled = this.model.enabled ? "" : " disabled";
    return `<button class="w4-button"${disabled}>${escapeHtml(this.model.label)}</button>`;
  }
}
```

The component keeps no state of its own: the model is passed in, so a test can render it with a
plain object and compare the HTML string.
"""

PROSE = (
    "A Web4 component owns its model, its view and its tests, and it talks to other components only "
    "through the interfaces it declares. That keeps each part small enough to review in one sitting. "
    "When you add a feature, start with the PDCA plan: state what you expect, build the smallest "
    "version that can show it, check it against the plan, and decide what to keep."
)

SHORT = "Yes. Run `w4tui rollback` and the previous build becomes latest again."

PDCA_GERMAN = """## Plan
- Ziel: eine neue Komponente `Suchfeld` mit Eingabe und Ergebnisliste.
- Risiko: langsame Antworten des Servers; deshalb eine Verzögerung von 300 ms beim Tippen.

## Do
1. Komponente und Modell anlegen.
2. Tests für leere Eingabe und für Treffer schreiben.

## Check
- Alle Tests sind grün.

## Act
- Die Verzögerung als Parameter in die Konfiguration übernehmen.
"""

GOOD = {
    "pdca plan": PDCA_PLAN,
    "python code": PYTHON_CODE,
    "shell snippet": SHELL_SNIPPET,
    "typescript": TS_COMPONENT,
    "prose": PROSE,
    "short": SHORT,
    "german pdca": PDCA_GERMAN,
}

TOKENIZER = Path(__file__).resolve().parents[2] / "w4tui" / "data" / "qwen2.5-tokenizer" / "tokenizer.json"


def random_tokens(seed: int, n: int = 150, ascii_only: bool = False) -> str:
    """What a broken quantization often prints: random Qwen2.5 vocabulary, decoded."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER))
    rng = random.Random(seed)
    ids: list[int] = []
    while len(ids) < n:
        i = rng.randrange(0, 151643)  # the ordinary tokens, below <|endoftext|>
        if not ascii_only or tok.decode([i]).isascii():
            ids.append(i)
    return tok.decode(ids)


def shuffled_words(text: str, seed: int) -> str:
    """Word salad: the words of a real answer in random order."""
    words = text.split()
    random.Random(seed).shuffle(words)
    return " ".join(words)


def shuffled_lines(text: str, seed: int) -> str:
    """Word salad that keeps the line breaks: each line's words shuffled."""
    rng = random.Random(seed)
    out = []
    for line in text.splitlines():
        words = line.split()
        rng.shuffle(words)
        out.append(" ".join(words))
    return "\n".join(out)


def repeated_fragments(seed: int, n: int = 120) -> str:
    """A stuck model: a few fragments over and over, in no exact period."""
    rng = random.Random(seed)
    fragments = ["the component", "PDCA", "plan the", "## Plan", "component creation", "and"]
    return " ".join(rng.choice(fragments) for _ in range(n))
