"""Batch order: length-grouped and deterministic per (seed, epoch), so a resumed run replays
exactly the batches an uninterrupted one would have seen.

Grouping samples of similar length into a batch cuts padding (the baseline pads random batches
to their longest sample); the batch with the longest sample goes first so an out-of-memory shows
at step 1, not hours in.
"""

from __future__ import annotations

import numpy as np

GROUP_BATCHES = 64  # samples are sorted by length within windows of this many batches


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int,
                  grouped: bool = True) -> list[np.ndarray]:
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if not grouped:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * GROUP_BATCHES
    batches: list[np.ndarray] = []
    for start in range(0, len(order), window):
        chunk = order[start:start + window]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    perm = rng.permutation(len(batches))
    batches = [batches[i] for i in perm]
    longest = max(range(len(batches)), key=lambda i: lengths[batches[i]].max())
    batches.insert(0, batches.pop(longest))
    return batches


def split_eval(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and eval indices; at least one eval sample when fraction > 0, never all of them."""
    if fraction <= 0 or n < 2:
        return np.arange(n), np.arange(0)
    k = min(n - 1, max(1, round(n * fraction)))
    perm = np.random.default_rng([seed, 7919]).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])


def pad(samples_ids: list[np.ndarray], samples_labels: list[np.ndarray], pad_id: int):
    """Right-pad a batch to its longest sample: ids, attention mask, labels (numpy int64)."""
    width = max(len(x) for x in samples_ids)
    ids = np.full((len(samples_ids), width), pad_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    labels = np.full_like(ids, -100)
    for row, (x, y) in enumerate(zip(samples_ids, samples_labels)):
        ids[row, :len(x)], mask[row, :len(x)], labels[row, :len(y)] = x, 1, y
    return ids, mask, labels
