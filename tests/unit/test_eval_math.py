"""The eval's perplexity, KL divergence and top-1 agreement equal a straightforward numpy computation
on the same logits, and it scores exactly the positions training put its loss on."""

import numpy as np
import pytest

from stages.evaluation.metrics import Scores, percentile, scored_positions


def straightforward(ref: np.ndarray, q: np.ndarray, targets: np.ndarray) -> dict:
    """The textbook formulas, one position at a time, in float64."""
    kls, nlls, same = [], [], []
    for a, b, t in zip(ref.astype(np.float64), q.astype(np.float64), targets):
        p = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
        r = np.exp(b - b.max()) / np.exp(b - b.max()).sum()
        kls.append(float(np.sum(p * (np.log(p) - np.log(r)))))
        nlls.append(float(-np.log(r[t])))
        same.append(int(np.argmax(a)) == int(np.argmax(b)))
    return {
        "ppl": float(np.exp(np.mean(nlls))),
        "kl_mean": float(np.mean(kls)),
        "kl_p99": float(np.percentile(kls, 99)),
        "kl_max": max(kls),
        "top1": float(np.mean(same)),
    }


@pytest.mark.parametrize("vocab, positions", [(1000, 150), (151936, 70)])
def test_kl_and_perplexity_match_numpy_on_the_same_logits(vocab, positions):
    rng = np.random.default_rng(vocab)
    ref = (rng.standard_normal((positions, vocab)) * 3).astype(np.float32)
    q = (ref + rng.standard_normal((positions, vocab)) * 0.3).astype(np.float32)  # a "quantized" copy
    targets = rng.integers(0, vocab, positions)
    scores = Scores()
    half = positions // 2  # two samples, added one after the other
    scores.add(q[:half], targets[:half], ref[:half])
    scores.add(q[half:], targets[half:], ref[half:])
    got, want = scores.summary(), straightforward(ref, q, targets)
    assert got["tokens"] == positions
    for key in ("ppl", "kl_mean", "kl_p99", "kl_max", "top1"):
        assert got[key] == pytest.approx(want[key], rel=1e-6, abs=1e-9), key
    assert 0 < got["top1"] < 1 and got["kl_mean"] > 0


def test_the_reference_against_itself_is_zero_and_agrees_everywhere():
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((90, 5000)) * 4).astype(np.float32)
    scores = Scores()
    scores.add(logits, rng.integers(0, 5000, 90), logits)
    summary = scores.summary()
    assert summary["kl_mean"] == summary["kl_p99"] == summary["kl_max"] == 0.0 and summary["top1"] == 1.0


def test_perplexity_without_a_reference_has_no_kl():
    logits = np.zeros((4, 10), dtype=np.float32)  # uniform: perplexity is the vocabulary size
    summary = Scores()
    summary.add(logits, np.array([1, 2, 3, 4]))
    result = summary.summary()
    assert result["ppl"] == pytest.approx(10.0, rel=1e-12) and "kl_mean" not in result


def test_percentile_interpolates_like_llama_cpp():
    values = np.array([5.0, 1.0, 3.0, 2.0, 4.0])
    assert percentile(values, 0.99) == pytest.approx(4.96)  # 0.99 * 4 = 3.96: between 4 and 5
    assert percentile(values, 0.0) == 1.0 and percentile(values, 1.0) == 5.0
    assert percentile(values, 0.5) == 3.0


def test_scored_positions_are_the_training_loss_positions():
    # logits at position t-1 predict token t; the first token has no context; -100 is not scored
    labels = np.array([-100, -100, 7, 8, -100, 9], dtype=np.int32)
    rows, targets = scored_positions(labels)
    assert rows.tolist() == [1, 2, 4] and targets.tolist() == [7, 8, 9]
    rows, _ = scored_positions(np.array([5, 6], dtype=np.int32))  # a text sample: every next token
    assert rows.tolist() == [0]
