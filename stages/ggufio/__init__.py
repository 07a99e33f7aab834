"""Writing GGUF files: metadata, vocabulary, tensor plan and the writer (not named ``gguf``: that is gguf-py)."""
