"""Reading and merging Hugging Face weights: safetensors streaming, half precision, LoRA merge, model folders."""
