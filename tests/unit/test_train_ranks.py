"""The pieces of a torchrun training that need no group: each rank's share of a step, the torchrun
command line (one node and many), and the launcher's reading of the group's output."""

import os
import signal
import subprocess
import sys
from argparse import Namespace

import numpy as np
import pytest

from core.errors import StageError
from core.events import read_events
from core.program import run_program
from stages.train import launch
from stages.train.batches import epoch_batches
from stages.train.distributed import Group


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_the_ranks_shares_are_disjoint_and_cover_every_sample_once_per_epoch(world):
    lengths = np.random.default_rng(0).integers(5, 60, size=101)
    batches = epoch_batches(lengths, 3, seed=1, epoch=0, batching="pack")  # 34 micro-batches
    accumulation = 2 * world  # a step: 2 micro-batches on each rank; the last step of the epoch is short
    seen = []
    for start in range(0, len(batches), accumulation):
        step = batches[start : start + accumulation]
        for rank in range(world):
            mine, factor = Group(rank=rank, world=world).share(step)
            if factor:
                seen += [i for b in mine for i in b]
            else:  # a rank without a micro-batch takes part with a zero loss: it trains on nothing
                assert len(step) <= rank
    assert sorted(seen) == list(range(101))


def test_fsdp_ranks_run_as_many_eval_forwards_ddp_ranks_each_their_own():
    # 5 eval batches on 3 ranks: under fsdp every forward gathers the base from all ranks, so rank 2 (with
    # one batch of its own) runs a second one that counts nothing; a DDP rank runs only its own.
    assert [Group(rank=r, world=3, shard="fsdp").eval_forwards(10, 2) for r in range(3)] == [2, 2, 2]
    assert Group(rank=2, world=3, shard="ddp").eval_forwards(10, 2) == 0
    assert Group(shard="fsdp").eval_forwards(10, 2) == 0  # one rank: a plain run


def args(**kw):
    return Namespace(**{"gpus": 2, "nnodes": 1, "node_rank": 0, "rdzv_endpoint": None, **kw})


def test_one_node_is_standalone_and_torchrun_never_restarts_or_catches_sigint():
    cmd = launch.torchrun_command(args(gpus=8), ["--output", "x"])
    assert cmd[1:4] == ["-m", "stages.train.torchrun", "--standalone"]  # torch.distributed.run, Ctrl-C ignored
    assert cmd[cmd.index("--nproc_per_node") + 1] == "8" and cmd[cmd.index("--max_restarts") + 1] == "0"
    assert "SIGINT" not in cmd[cmd.index("--signals_to_handle") + 1]
    assert cmd[-4:] == ["-m", "stages.train_lora", "--output", "x"]


def test_several_nodes_pass_their_rendezvous_through():
    cmd = launch.torchrun_command(args(nnodes=2, node_rank=1, rdzv_endpoint="10.0.0.1:29500"), [])
    assert "--standalone" not in cmd
    assert cmd[3:9] == ["--nnodes", "2", "--node_rank", "1", "--rdzv_endpoint", "10.0.0.1:29500"]
    with pytest.raises(StageError, match="--rdzv_endpoint"):
        launch.torchrun_command(args(nnodes=2), [])


def test_the_watch_names_the_rank_torchrun_blames_and_its_last_line():
    watch = launch.Watch()
    lines = [
        "[rank 0] 2026-12-03 08:10:39,049 INFO stages.train: step 9/10",
        "[rank 1] 2026-12-03 08:10:39,050 INFO stages.train: step 9/10 (90%)",
        "Failures:",
        "  rank      : 0 (local_rank: 0)",
        "  exitcode  : -15 (pid: 1)",
        "Root Cause (first observed failure):",
        "[0]:",
        "  rank      : 1 (local_rank: 1)",
        "  exitcode  : -9 (pid: 2)  (SIGKILL)",
    ]
    kept = [line for line in lines if watch.feed(line)]
    assert lines[1] not in kept and lines[0] in kept  # other ranks' INFO lines repeat rank 0's
    assert watch.failure(1) == (
        "rank 1 stopped (killed by SIGKILL); its last log line: 2026-12-03 08:10:39,050 INFO stages.train: step 9/10 (90%)"
    )
    assert "before rank 0 could say why" in launch.Watch().failure(1)


def test_the_global_batch_is_batch_times_ranks_times_accumulation(config_file):
    from core import specs, trainsettings
    from core.config import load_config

    config = load_config(config_file)  # [train] batch_size 1, gradient_accumulation 16, gpus 1
    required = ["--base_model", "m", "--dataset", "d", "--output", "o"]

    def batch(*flags):
        return trainsettings.batch(specs.BY_NAME["train"].invoke(config, [*required, *flags]).args)

    assert batch() == {
        "ranks": 1,
        "batch_size": 1,
        "gradient_accumulation": 16,
        "global_batch": 16,
        "shard": "ddp",
    }
    eight = batch("--gpus", "8", "--gradient-accumulation", "2", "--batch_size=2", "--shard=fsdp")
    assert eight == {"ranks": 8, "batch_size": 2, "gradient_accumulation": 2, "global_batch": 32, "shard": "fsdp"}
    assert batch("--gpus", "4", "--nnodes", "2")["global_batch"] == 128


def test_the_runner_records_a_trainings_ranks_and_global_batch(config_file):
    from core.config import load_config
    from w4tui.runs.pipeline import wait_for
    from w4tui.runs.runner import Runner
    from w4tui.runs.start import checked_start

    runner = Runner(load_config(config_file))
    # No base model here: the stage refuses at once; what matters is the record written before it starts.
    run = checked_start(runner, runner.invocation("train", ["--gpus", "8", "--shard", "fsdp"]), force=True)
    wait_for(runner, run, poll_s=0.1)
    assert run.record["train"] == {
        "ranks": 8,
        "batch_size": 1,
        "gradient_accumulation": 16,
        "global_batch": 128,
        "shard": "fsdp",
    }
    assert runner.get(run.id).record["train"]["global_batch"] == 128


@pytest.fixture
def rank_program(tmp_path, monkeypatch):
    """Run ``body`` as rank ``rank``'s program would (run_program, the rank's event writer); returns the
    exit code and the events rank 0 wrote."""
    monkeypatch.setattr(launch, "PEER_GRACE_S", 0.0)
    sigterm = signal.getsignal(signal.SIGTERM)  # run_program makes SIGTERM a Ctrl-C: not for pytest's worker

    def run(rank: int, body):
        path = tmp_path / f"events-{rank}.jsonl"
        events = launch.WorkerEvents("train", path, "t", rank)
        try:
            code = run_program("train", lambda ev: launch.as_member(rank, ev, body), events)
        finally:
            signal.signal(signal.SIGTERM, sigterm)
        return code, read_events(path) if path.exists() else []

    return run


def raising(exc):
    def body():
        raise exc

    return body


@pytest.mark.parametrize("rank", [0, 1])
def test_a_ctrl_c_before_the_group_agreed_ends_any_rank_with_130(rank_program, rank):
    # 130 (a failure to torchrun) stops the other ranks: one waiting for this one in a collective would hang
    code, events = rank_program(rank, raising(KeyboardInterrupt()))
    assert code == 130
    assert [e.get("status") for e in events if e["kind"] == "done"] == (["cancelled"] if rank == 0 else [])


def test_a_stop_the_group_agreed_on_ends_the_other_ranks_well_and_rank_0_reports_it(rank_program):
    assert rank_program(1, raising(launch.AgreedStop())) == (0, [])
    code, events = rank_program(0, raising(launch.AgreedStop()))
    assert code == 130 and [e.get("status") for e in events if e["kind"] == "done"] == ["cancelled"]


def test_a_ranks_failure_is_left_to_the_launcher_which_names_the_rank_that_failed_first(rank_program):
    # rank 0's collective fails when rank 1 dies; torchrun, not rank 0, knows which went first
    code, events = rank_program(0, raising(RuntimeError("Connection closed by peer [127.0.0.1]:4242")))
    assert code == 1 and not [e for e in events if e["kind"] in ("error", "done")]
    # the user's mistakes are still rank 0's to say
    code, events = rank_program(0, raising(StageError("bad.jsonl: line 3 is not JSON", hint="fix it")))
    assert code == 1 and [e["message"] for e in events if e["kind"] == "error"] == ["bad.jsonl: line 3 is not JSON"]


def test_a_ctrl_c_while_torchrun_starts_is_passed_on_to_the_ranks(monkeypatch):
    # The CI hang: SIGINT was ignored while torchrun started, so a cancel then was lost and it trained on
    told = []
    monkeypatch.setattr(launch, "_interrupt_ranks", lambda proc: told.append(proc.pid))
    monkeypatch.setattr(launch, "torchrun_command", lambda *_: [sys.executable, "-c", "import time; time.sleep(1)"])
    start = subprocess.Popen

    def ctrl_c_while_starting(*a, **kw):
        os.kill(os.getpid(), signal.SIGINT)
        return start(*a, **kw)

    monkeypatch.setattr(launch.subprocess, "Popen", ctrl_c_while_starting)
    launch.run(args(), [], launch.GroupEvents("train"))
    assert len(told) == 1 and told[0] > 0
