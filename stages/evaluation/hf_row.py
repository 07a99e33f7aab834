"""The top row of the table: the transformers base model with the adapter, before any conversion,
scored on the same tokens with the same metrics code. The gap to the F16 GGUF row is what conversion
costs; the gaps below it are what each quantization costs.

It runs in the precision training used on this device (fp32 on the CPU, bf16/fp16 on MPS/CUDA) and,
like training, sends only the scored positions through the 152k-wide vocabulary projection.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np

from core.errors import StageError
from stages.evaluation.metrics import Scores, scored_positions
from stages.train.data import Sample
from stages.train.device import detect


def perplexity(base: Path, adapter: Path | None, samples: list[Sample], device: str, progress) -> dict:
    import torch  # torch, transformers and peft when the row runs, not when the eval stage starts
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" bars on stderr, which is for the one-line error

    try:
        precision = detect(device)
    except ValueError as exc:
        raise StageError(str(exc), hint="use --device auto") from None
    started = time.perf_counter()
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, precision.dtype))
    except (OSError, ValueError) as exc:
        raise StageError(f"{base}: cannot load the base model: {str(exc).splitlines()[0]}") from None
    if adapter is not None:
        from peft import PeftModel  # peft only for a row with an adapter

        model = PeftModel.from_pretrained(model, adapter).get_base_model()  # LoRA layers stay injected
    model = model.to(precision.device).eval()
    scores = Scores()
    try:
        with torch.no_grad():
            for i, sample in enumerate(samples):
                rows, targets = scored_positions(sample.labels)
                ids = torch.from_numpy(sample.ids.astype(np.int64))[None].to(precision.device)
                hidden = model.model(input_ids=ids).last_hidden_state[0, :-1]
                keep = torch.from_numpy(rows).to(precision.device)
                logits = model.lm_head(hidden[keep]).float().cpu().numpy()
                scores.add(logits, targets)
                progress(i + 1)
    finally:
        del model
        gc.collect()
        if precision.device == "mps":
            torch.mps.empty_cache()
    return {
        **scores.summary(),
        "device": precision.device,
        "dtype": precision.dtype,
        "seconds": round(time.perf_counter() - started, 3),
    }
