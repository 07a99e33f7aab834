#!/usr/bin/env bash
# The one test command (README, CI): a venv with the pinned CPU torch, the project with its test
# extras (llama-cpp-python builds llama.cpp from source the first time, then pip caches the wheel),
# llama.cpp's own converter as the reference for the GGUF fidelity tests, then the static checks
# (ruff lint + format, the import-linter contracts in pyproject.toml) and the whole suite, in parallel.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# constraints.txt pins every version the suite was proven with; W4TUI_NEWEST=1 tries the newest on
# purpose (only torch stays pinned), to see what a release would break before moving the pins.
constraints=constraints.txt
if [ -n "${W4TUI_NEWEST:-}" ]; then
  constraints=$(mktemp) && grep '^torch==' constraints.txt >"$constraints"
fi
.venv/bin/python -m pip install -q -c "$constraints" -e '.[test]'

if [ -z "${W4TUI_LLAMA_CPP_SRC:-}" ]; then
  version=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
  src=.cache/llama-cpp-python-$version
  if [ ! -f "$src/vendor/llama.cpp/convert_hf_to_gguf.py" ]; then
    rm -rf "$src" && mkdir -p "$src"
    .venv/bin/python -m pip download -q --no-deps --no-binary :all: -d "$src" "llama-cpp-python==$version"
    tar -xzf "$src"/llama_cpp_python-*.tar.gz -C "$src" --strip-components=1
  fi
  export W4TUI_LLAMA_CPP_SRC="$PWD/$src/vendor/llama.cpp"
fi

.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/lint-imports --no-cache >/dev/null || .venv/bin/lint-imports --no-cache
# On every logical core, up to 4 (more workers mostly wait on each other's trainings); tests that share a
# module-scoped build go to one worker (tests/conftest.py). `bash scripts/test.sh -n 0` runs it in one.
.venv/bin/python -m pytest -q -n logical --maxprocesses 4 --dist loadgroup "$@"
