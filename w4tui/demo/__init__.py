"""The demo: a tiny real-format Qwen2 model, sample Web4 data and a workspace config around them."""
