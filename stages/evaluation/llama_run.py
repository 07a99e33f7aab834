"""llama.cpp through the ``llama_cpp`` binding: the logits of every position of a sample, and speed.

Each sample is evaluated in its own context (the KV cache is cleared first) exactly as training saw
it: the same token ids, no BOS added (Qwen2 has none), one ``eval`` call in batches of ``n_batch``.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import numpy as np

from core.errors import StageError
from stages.evaluation.metrics import scored_positions
from stages.train.data import Sample

GEN_TOKENS = 32  # tokens generated for the generation speed
PROMPT_TOKENS = 512  # at most this many prompt tokens for the prompt speed


def _binding():
    try:
        import llama_cpp  # the binding (and its logger) only when a GGUF is scored
    except ImportError:
        raise StageError(
            "the eval stage needs the llama_cpp Python binding (llama.cpp's own loader)",
            hint="pip install llama-cpp-python",
        ) from None
    return llama_cpp


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp prints model-loading chatter on fd 2 even with verbose=False; the stage's stderr is for
    the one-line error only. It goes to stdout (the run's output.log) instead."""
    saved = os.dup(2)
    try:
        os.dup2(1, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def open_llama(**kwargs):
    """``llama_cpp.Llama(**kwargs)``, on a CPU with AMX without the extra buffer types: llama.cpp's AMX
    matmul segfaults on the first decode of a quantized model (ggml-org/llama.cpp#20824, seen on this
    project's Sapphire Rapids test machines). The binding does not expose ``use_extra_bufts``, so its
    default model parameters are wrapped for the one call. Everywhere else, llama.cpp's own defaults."""
    llama_cpp = _binding()
    if b"AMX_INT8 = 1" not in llama_cpp.llama_print_system_info():
        return llama_cpp.Llama(**kwargs)
    binding = llama_cpp.llama.llama_cpp  # the module whose default params Llama.__init__ reads
    defaults = binding.llama_model_default_params

    def without_extra_buffers():
        params = defaults()
        params.use_extra_bufts = False
        return params

    binding.llama_model_default_params = without_extra_buffers
    try:
        return llama_cpp.Llama(**kwargs)
    finally:
        binding.llama_model_default_params = defaults


def load(path: Path, n_ctx: int, threads: int, logits_all: bool = True):
    kwargs = {"n_threads": threads, "n_threads_batch": threads} if threads > 0 else {}
    try:
        with _quiet_stderr():
            return open_llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_batch=min(512, n_ctx),
                logits_all=logits_all,
                verbose=False,
                **kwargs,
            )
    except (ValueError, RuntimeError) as exc:
        raise StageError(f"{path}: llama.cpp cannot load it: {exc}") from None


def scored_logits(llm, sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """(logits at the scored positions, float32; the target ids)."""
    ids = [int(t) for t in sample.ids]
    llm.reset()
    llm.eval(ids)
    rows, targets = scored_positions(sample.labels)
    return np.array(llm.scores[rows], dtype=np.float32), targets


def context_for(samples: list[Sample]) -> int:
    longest = max(len(s.ids) for s in samples)
    return max(64, -(-longest // 64) * 64)


def speed(path: Path, prompt: list[int], threads: int) -> dict:
    """llama.cpp's prompt and generation tokens/s on this file (greedy, without per-position logits)."""
    started = time.perf_counter()
    prompt = prompt[:PROMPT_TOKENS]
    llm = load(path, max(len(prompt) + GEN_TOKENS + 8, 64), threads, logits_all=False)
    load_s = time.perf_counter() - started
    llm.eval(prompt)  # warm-up: the first decode allocates buffers and pages the weights in
    llm.reset()  # (no cached prefix for generate() to reuse: the prompt is evaluated again, timed)
    loaded = time.perf_counter()
    first = last = None
    count = 0
    for _token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
        count += 1
        last = time.perf_counter()
        first = first or last
        if count >= GEN_TOKENS:
            break
    llm.close()
    return {
        "load_s": round(load_s, 3),
        "prompt_tps": round(len(prompt) / max(first - loaded, 1e-9), 1),
        "gen_tps": round((count - 1) / max(last - first, 1e-9), 1) if count > 1 else None,
    }
