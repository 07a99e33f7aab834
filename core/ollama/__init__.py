"""The Ollama server: the HTTP client, Modelfiles, model names, promotion of latest/previous."""
