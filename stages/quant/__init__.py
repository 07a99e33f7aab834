"""Quantizer backends: llama-quantize programs and the llama_cpp binding."""
