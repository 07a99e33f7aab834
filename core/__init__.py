"""What both processes share — the stages and the app: config, events, files, specs, Ollama, names.

Standard library and light packages only: never Textual, never torch (import contracts in pyproject.toml).
"""
