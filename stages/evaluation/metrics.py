"""Perplexity, KL divergence and top-1 agreement over the scored (assistant) tokens.

The method is llama.cpp's ``llama-perplexity --kl-divergence``: for every scored position, the KL
divergence of the quantized model's next-token distribution from the reference (F16) one,
``sum_v p_ref(v) * (log p_ref(v) - log p_q(v))``; its mean and 99th percentile (linear interpolation
between sorted values, as llama.cpp's ``percentile``); the share of positions where both models
rank the same token first; and perplexity, ``exp`` of the mean negative log-likelihood of the actual
next tokens. Unlike llama.cpp we keep the reference log-probabilities exactly (float32 logits, float64
arithmetic) instead of 16-bit, and score the assistant tokens of each sample in its own context,
the tokens training put its loss on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CHUNK_ROWS = 64


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (a 152k-wide vocabulary loses digits in float32 sums)."""
    x = np.asarray(logits, dtype=np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def nll(logp: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of ``targets`` under each row of log-probabilities."""
    return -logp[np.arange(len(targets)), targets]


def kl_divergence(ref_logp: np.ndarray, logp: np.ndarray) -> np.ndarray:
    """KL(ref ‖ q) per row. Zero where the reference probability is zero (exp underflow), as it must be."""
    p = np.exp(ref_logp)
    return (p * (ref_logp - logp)).sum(axis=-1)


def percentile(values: np.ndarray, fraction: float) -> float:
    """Linear interpolation between the sorted values, as llama.cpp's percentile() does."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    if not len(ordered):
        return float("nan")
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float((1 - (position - low)) * ordered[low] + (position - low) * ordered[high])


@dataclass
class Scores:
    """Per-token figures for one model, appended sample by sample."""

    nll: list[np.ndarray] = field(default_factory=list)
    kl: list[np.ndarray] = field(default_factory=list)
    same_top: list[np.ndarray] = field(default_factory=list)

    def add(self, logits: np.ndarray, targets: np.ndarray, ref_logits: np.ndarray | None = None) -> None:
        """``logits`` (positions x vocab) of this model; ``ref_logits`` of the reference at the same
        positions. Rows go through in chunks: a 152k vocabulary in float64 is 1.2 MB a row."""
        for start in range(0, len(targets), CHUNK_ROWS):
            part = slice(start, start + CHUNK_ROWS)
            logp = log_softmax(logits[part])
            self.nll.append(nll(logp, targets[part]))
            if ref_logits is not None:
                ref_logp = log_softmax(ref_logits[part])
                self.kl.append(kl_divergence(ref_logp, logp))
                self.same_top.append(logp.argmax(axis=-1) == ref_logp.argmax(axis=-1))

    @property
    def tokens(self) -> int:
        return int(sum(len(a) for a in self.nll))

    def summary(self) -> dict:
        nlls = np.concatenate(self.nll) if self.nll else np.zeros(0)
        out = {
            "tokens": int(len(nlls)),
            "nll": float(nlls.mean()) if len(nlls) else None,
            "ppl": float(np.exp(nlls.mean())) if len(nlls) else None,
        }
        if self.kl:
            kls = np.concatenate(self.kl)
            out.update(
                kl_mean=float(kls.mean()),
                kl_p99=percentile(kls, 0.99),
                kl_max=float(kls.max()),
                top1=float(np.concatenate(self.same_top).mean()),
            )
        return out


def scored_positions(labels: np.ndarray, ignore: int = -100) -> tuple[np.ndarray, np.ndarray]:
    """(rows of the logits, target ids) where training put a loss: the logits at position t-1 predict
    token t, for every t >= 1 whose label is not ``ignore`` (the first token has no context)."""
    targets = labels[1:]
    rows = np.flatnonzero(targets != ignore)
    return rows, targets[rows].astype(np.int64)
