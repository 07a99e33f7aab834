"""Batches: which samples go together (deterministic per seed and epoch, so a resumed run replays
exactly the batches an uninterrupted one would have seen) and how they are laid out in tensors.

Three ways, chosen by ``batching``:
- ``pack``  random batches, as the Hugging Face Trainer draws them, but each batch is packed into
            rows no longer than its longest sample; samples in a row cannot attend to each other
            (position ids restart per sample, which transformers turns into a block-causal mask).
            Same batches, same loss as padding to the longest, with most of the padding gone.
- ``group`` batches of samples of similar length (sorted within windows of 64 batches), padded:
            the least padding, but each step sees only short or only long samples.
- ``pad``   random batches padded to their longest sample (the Trainer's default; for comparison).
The batch holding the longest sample goes first, so an out-of-memory shows at step 1, not hours in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.train.data import IGNORE, Sample

BATCHING = ("pack", "group", "pad")
GROUP_BATCHES = 64


@dataclass
class Batch:
    ids: np.ndarray  # (rows, width) int64
    positions: np.ndarray  # (rows, width) int64: restarts at 0 for every sample and for the padding
    labels: np.ndarray  # (rows, width) int64, IGNORE where no loss
    tokens: int  # real tokens (not padding)


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, batching: str) -> list[np.ndarray]:
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    if batching == "group":
        window = batch_size * GROUP_BATCHES
        batches: list[np.ndarray] = []
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
            batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        batches = [batches[i] for i in rng.permutation(len(batches))]
    else:
        batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
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


def pack_rows(lengths: list[int]) -> list[list[int]]:
    """First-fit decreasing into rows as long as the longest sample: never wider than padding would be."""
    capacity = max(lengths)
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def collate(samples: list[Sample], pad_id: int, pack: bool) -> Batch:
    lengths = [len(s.ids) for s in samples]
    rows = pack_rows(lengths) if pack else [[i] for i in range(len(samples))]
    width = max(sum(lengths[i] for i in row) for row in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    positions = np.zeros_like(ids)
    labels = np.full_like(ids, IGNORE)
    for r, row in enumerate(rows):
        at = 0
        for i in row:
            n = lengths[i]
            ids[r, at : at + n], labels[r, at : at + n], positions[r, at : at + n] = (
                samples[i].ids,
                samples[i].labels,
                np.arange(n),
            )
            labels[r, at] = IGNORE  # a sample's first token has no context: never the target of the one before
            at += n
        positions[r, at:] = np.arange(width - at)  # padding is a segment of its own: no sample attends to it
    return Batch(ids, positions, labels, sum(lengths))
