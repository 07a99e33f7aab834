"""Batch order and layout: every sample once per epoch, replayable, and packing that keeps samples apart."""

import numpy as np
import pytest
import torch

from stages.train.batches import BATCHING, collate, epoch_batches, pack_rows
from stages.train.data import IGNORE, Sample

LENGTHS = np.array([5, 40, 7, 300, 12, 9, 64, 3, 33, 18, 250, 6, 21, 8, 90, 11, 4, 120, 14, 10, 2, 75])


@pytest.mark.parametrize("batching", BATCHING)
def test_each_epoch_has_every_sample_once_in_a_replayable_order(batching):
    batches = epoch_batches(LENGTHS, 4, seed=3, epoch=0, batching=batching)
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(LENGTHS)))
    assert all(len(b) <= 4 for b in batches)
    assert 3 in batches[0]  # the longest sample first: an out-of-memory shows at step 1
    again = epoch_batches(LENGTHS, 4, seed=3, epoch=0, batching=batching)
    assert [b.tolist() for b in again] == [b.tolist() for b in batches]
    other = epoch_batches(LENGTHS, 4, seed=3, epoch=1, batching=batching)
    assert [b.tolist() for b in other] != [b.tolist() for b in batches]


def test_grouped_batches_hold_similar_lengths():
    batches = epoch_batches(LENGTHS, 4, seed=3, epoch=0, batching="group")
    padded = sum(len(b) * LENGTHS[b].max() for b in batches)
    random = sum(len(b) * LENGTHS[b].max() for b in epoch_batches(LENGTHS, 4, seed=3, epoch=0, batching="pad"))
    assert padded < 0.75 * random


def test_pack_rows_fit_the_longest_sample_and_keep_every_sample():
    lengths = [50, 7, 30, 12, 12, 40, 3]
    rows = pack_rows(lengths)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 50 for row in rows)
    assert len(rows) == 4  # 50 | 40+7+3 | 30+12 | 12


def sample(ids, labelled_from):
    ids = np.array(ids, dtype=np.int32)
    labels = ids.copy()
    labels[:labelled_from] = IGNORE
    return Sample(ids, labels)


def test_packed_rows_give_the_loss_of_separate_samples(tiny_model):
    """Samples packed into one row must not see each other, and the last token of one sample must
    never be trained to predict the first token of the next (a {"text"} sample labels its first token)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from stages.train.loop import loss_sum

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    base.config.use_cache = False
    model = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    model.eval()
    rng = np.random.default_rng(1)
    batch = [
        sample(rng.integers(0, 5000, 24), 10),
        sample(rng.integers(0, 5000, 6), 0),
        sample(rng.integers(0, 5000, 9), 3),
        sample(rng.integers(0, 5000, 5), 0),
    ]
    packed = collate(batch, pad_id=0, pack=True)
    assert packed.ids.shape == (2, 24) and packed.tokens == 44  # 24 | 9+6+5, padded to 24
    with torch.no_grad():
        separate = [loss_sum(model, collate([s], 0, pack=False), "cpu") for s in batch]
        together, count = loss_sum(model, packed, "cpu")
        padded, padded_count = loss_sum(model, collate(batch, 0, pack=False), "cpu")
    assert count == padded_count == sum(n for _, n in separate) == 14 + 5 + 6 + 4
    assert float(together) == pytest.approx(sum(float(v) for v, _ in separate), rel=1e-5)
    assert float(padded) == pytest.approx(float(together), rel=1e-5)
