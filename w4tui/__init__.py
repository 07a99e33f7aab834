"""w4tui: fine-tune Qwen2.5-Coder into the Web4 agent and serve it with Ollama, from a terminal."""

__version__ = "0.1.0"
