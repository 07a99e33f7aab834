"""The eval stage's library: llama.cpp logits, the metrics, the transformers row, temporary quantizations."""
