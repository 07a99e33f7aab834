"""What the next writer of an output reclaims: only the partials of that output whose writer is gone
(a live writer's, another output's and an unlocked one are left alone), and the old copy a replace was
swapping out when it was killed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from core.fsutil import DiskSpaceError, atomic_path, atomic_write_text, remove_stale_partials, scratch_dir

HOLD = textwrap.dedent("""
    import sys, time
    from core.fsutil import scratch_dir
    with scratch_dir(sys.argv[1]) as d:
        print(d.name, flush=True)
        time.sleep(60)
""")


def test_only_partials_whose_writer_is_gone_are_removed(tmp_path):
    out = tmp_path / "m-f16.gguf"
    live = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        live_name = live.stdout.readline().strip()  # a writer still at work
        killed = subprocess.run(
            [sys.executable, "-c", HOLD.replace("time.sleep(60)", "import os; os._exit(9)"), str(out)],
            capture_output=True,
            text=True,
        ).stdout.strip()  # died mid-write
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                HOLD.replace("time.sleep(60)", "import os; os._exit(9)"),
                str(tmp_path / "m-f16.gguf.bak"),
            ],
            capture_output=True,
            text=True,
        ).stdout.strip()
        unlocked = tmp_path / ".m-f16.gguf.abcdefgh.partial"  # no lock: not known to be ours, kept
        unlocked.mkdir()
        atomic_write_text(out, "new")
        names = sorted(p.name for p in tmp_path.iterdir())
        assert live_name in names and other in names and unlocked.name in names
        assert killed not in names and out.read_text() == "new"
    finally:
        live.kill()
        live.wait()
    # Once the writer is gone its partial is stale too; another output's goes only when asked for all.
    assert [p.name for p in remove_stale_partials(tmp_path, out.name)] == [live_name]
    assert [p.name for p in remove_stale_partials(tmp_path)] == [other]
    assert unlocked.exists()


def test_a_replace_killed_between_its_renames_gets_the_old_copy_back(tmp_path):
    final, old = tmp_path / "merged", tmp_path / ".merged.old"
    old.mkdir()
    (old / "model.safetensors").write_text("the only good copy")
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.mkdir()
        raise RuntimeError("this writer fails too")
    assert (final / "model.safetensors").read_text() == "the only good copy" and not old.exists()


def test_a_full_disk_inside_atomic_path_is_named_and_leaves_nothing(tmp_path):
    import errno

    target = tmp_path / "a" / "b" / "x.gguf"
    with pytest.raises(DiskSpaceError, match=r"/a/b: disk full while writing x\.gguf"), atomic_path(target) as tmp:
        tmp.write_text("partly")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_scratch_dir_is_gone_afterwards(tmp_path):
    with scratch_dir(tmp_path / "x.gguf") as scratch:
        (scratch / "merged").mkdir()
    assert list(tmp_path.iterdir()) == []
