"""A small, varied Web4-style chat dataset for the demo and the tests (seeded, offline).

Web4 is the user's component-based development method; typical requests ask for a PDCA
(Plan-Do-Check-Act) document or a component, and answers are structured Markdown.
"""

from __future__ import annotations

import json
import random
from datetime import date
from pathlib import Path

SYSTEM = "You are the Web4 agent: you write component-based code and PDCA documents following the Web4 method."

SUBJECTS = [
    "component creation",
    "a User component",
    "the build pipeline",
    "a release of the Web4 CLI",
    "refactoring the Scenario loader",
    "unit tests for the IOR resolver",
    "the Once kernel upgrade",
    "migrating a component to TypeScript",
    "documentation of the Web4Requirement API",
    "a semantic version bump",
    "the nightly fine-tuning run",
    "an accessibility review",
    "a caching layer for the model registry",
    "error handling in the deployment tool",
]
ASKS = [
    "Create a PDCA for {s}.",
    "Write a PDCA document for {s}.",
    "Plan {s} the Web4 way, as a PDCA.",
    "I need a PDCA for {s}, keep it short.",
    "Give me a detailed PDCA covering {s}.",
]
CODE_ASKS = [
    "Create a Web4 component called {n} with an init method and a scenario.",
    "Show the TypeScript skeleton of the {n} component.",
    "Write the interface for the {n} component following Web4 conventions.",
]
NAMES = ["User", "Scenario", "Requirement", "Logger", "Registry", "Builder", "Session", "Release"]
STEPS = [
    "Read the existing requirement and its acceptance criteria",
    "Define the component boundary",
    "Write the scenario file first",
    "Implement the smallest working version",
    "Run the unit tests",
    "Record the decision in the session log",
    "Review the dependency list",
    "Measure the build time",
    "Check the component against the Web4 naming rules",
    "Update the version in package.json",
    "Write a regression test for the bug",
    "Verify the output on a clean checkout",
]


def _pdca(rng: random.Random, subject: str) -> str:
    def items(k: int) -> str:
        return "\n".join(f"- {step}." for step in rng.sample(STEPS, k))

    size = rng.choice([1, 2, 3, 4, 6])  # varied answer lengths, as in real data
    return (
        f"# PDCA: {subject}\n\n## Plan\n{items(min(size + 1, 6))}\n\n## Do\n{items(size)}\n\n"
        f"## Check\n{items(max(1, size - 1))}\n\n## Act\n- Keep what worked; adjust the plan for "
        f"{subject} where the checks failed.\n"
    )


def _component(name: str) -> str:
    return (
        f"```typescript\nexport interface {name} {{\n  init(scenario?: Scenario<{name}Model>): this;\n"
        f"  toScenario(): Scenario<{name}Model>;\n}}\n\nexport class Default{name} implements {name} {{\n"
        f"  private model: {name}Model = {{ uuid: crypto.randomUUID() }};\n\n"
        f"  init(scenario?: Scenario<{name}Model>): this {{\n    if (scenario) this.model = scenario.model;\n"
        f"    return this;\n  }}\n\n  toScenario(): Scenario<{name}Model> {{\n"
        f"    return {{ ior: {{ uuid: this.model.uuid }}, model: this.model }};\n  }}\n}}\n```\n"
    )


def sample(rng: random.Random) -> dict:
    if rng.random() < 0.7:
        subject = rng.choice(SUBJECTS)
        user, answer = rng.choice(ASKS).format(s=subject), _pdca(rng, subject)
    else:
        name = rng.choice(NAMES)
        user, answer = rng.choice(CODE_ASKS).format(n=name), _component(name)
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ]
    }


def write_dataset(path: Path, count: int, seed: int) -> Path:
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(count):
            fh.write(json.dumps(sample(rng), ensure_ascii=False) + "\n")
    return path


def write_demo_data(train_dir: Path, incoming_dir: Path, count: int = 300, day: date | None = None) -> list[Path]:
    """The main dataset plus one day's incremental file; returns the files written."""
    day = day or date.today()
    return [
        write_dataset(train_dir / "web4_train.jsonl", count, seed=1),
        write_dataset(incoming_dir / f"incremental_{day.isoformat()}.jsonl", max(8, count // 15), seed=2),
    ]
