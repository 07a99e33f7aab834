"""Which samples a run trains and evaluates on: profiles, the replay draw, the main-dataset slice a
nightly run holds out."""

import numpy as np
import pytest

from core.errors import StageError
from stages.train.batches import split_eval
from stages.train.data import Sample
from stages.train.selection import MAIN_EVAL_MAX, _profile, main_holdout, replay_picks


def samples(n: int) -> list[Sample]:
    return [Sample(np.array([i, i + 1], dtype=np.int32), np.array([i, i + 1], dtype=np.int32)) for i in range(n)]


@pytest.mark.parametrize("profile, n, want", [("dry", 5000, 100), ("mini", 5000, 3000), ("full", 5000, 5000)])
def test_profiles_select_100_3000_or_all(profile, n, want):
    notes: list[str] = []
    chosen = _profile(samples(n), profile, 42, notes)
    assert len(chosen) == want and len({int(s.ids[0]) for s in chosen}) == want
    assert notes == ([] if profile == "full" else [f"profile {profile}: {want} of {n} samples"])
    # the same seed picks the same samples (a resume, the eval stage), another seed others
    assert [s.ids[0] for s in _profile(samples(n), profile, 42, [])] == [s.ids[0] for s in chosen]
    if profile != "full":
        assert [s.ids[0] for s in _profile(samples(n), profile, 7, [])] != [s.ids[0] for s in chosen]


def test_with_fewer_samples_a_profile_takes_all_and_says_so_once():
    notes: list[str] = []
    assert len(_profile(samples(40), "mini", 1, notes)) == 40
    assert notes == ["profile mini: the dataset has 40 samples, fewer than 3000: using all"]
    with pytest.raises(StageError, match="--profile huge: unknown profile"):
        _profile(samples(4), "huge", 1, [])


def test_the_nightly_slice_of_the_main_data_is_its_eval_split_and_never_replayed():
    held = main_holdout(1000, 0.05, 42)
    _, full_run_eval = split_eval(1000, 0.05, 42)
    assert held.tolist() == full_run_eval.tolist()  # what a first run on the main data held out
    assert len(main_holdout(100_000, 0.01, 42)) == MAIN_EVAL_MAX
    picks = replay_picks(1000, 300, 0.5, 42, {"night.jsonl": "abc"}, exclude=held)
    assert len(picks) == 300 and not set(picks.tolist()) & set(held.tolist())
    other_night = replay_picks(1000, 300, 0.5, 42, {"night.jsonl": "def"}, exclude=held)
    assert picks.tolist() != other_night.tolist()


def test_replay_without_a_slice_draws_as_before():
    # the draw the trainer made before the slice existed: the same samples for the same night
    import hashlib
    import json

    files = {"n.jsonl": "x"}
    night = int(hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng([42, night])
    assert replay_picks(500, 100, 0.2, 42, files, np.arange(0)).tolist() == sorted(rng.choice(500, 25, replace=False))
