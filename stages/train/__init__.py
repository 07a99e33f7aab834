"""The LoRA trainer behind ``python -m stages.train_lora``: data, device, batching, loop, checkpoints."""
