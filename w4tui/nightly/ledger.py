"""The build ledger: one SQLite file in the state dir (``<state>/ledger.sqlite``) recording every nightly
build (adapter, F16 and quantized GGUFs, Ollama tag, parent adapter, the run that made each, data files
with sha256, hyper-parameters, sizes, verify result, promotion, retention) and every night's outcome.

It is an index, never the only copy: a night's record is also a JSON file in ``<state>/nights/``, and a
build's fields are read from its runs (artifact events, ``training_run.json``, ``verify.json``, the
GGUF lineage keys), so ``rebuild()`` recreates the database from the files on disk.
Standard library only: the TUI reads it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from core.config import Config
from core.errors import ActionableError
from core.fsutil import atomic_write_text, move_aside
from core.names import LIVE_OUTCOMES, NightOutcome
from w4tui.nightly.record import build_fields, training_record
from w4tui.nightly.retention import replay
from w4tui.runs.runner import RunError, Runner

LEDGER_FILE = "ledger.sqlite"
NIGHTS_DIR = "nights"
IMPORT_FILE = "import.json"  # beside an adapter `w4tui adapter import` brought in (w4tui/adapter_import.py)
JSON_COLUMNS = ("data", "hparams", "runs", "sizes", "steps")

SCHEMA = """
CREATE TABLE IF NOT EXISTS builds (
  build TEXT PRIMARY KEY, night TEXT, created REAL, adapter TEXT, parent_adapter TEXT, base_model TEXT,
  data TEXT, hparams TEXT, f16 TEXT, gguf TEXT, quant TEXT, tag TEXT, runs TEXT, sizes TEXT,
  verify TEXT, verify_error TEXT, promoted INTEGER NOT NULL DEFAULT 0, promoted_at REAL,
  f16_deleted REAL, deleted REAL);
CREATE TABLE IF NOT EXISTS nights (
  key TEXT PRIMARY KEY, scheduled_for REAL, trigger TEXT, started REAL, ended REAL, outcome TEXT,
  reason TEXT, failed_step TEXT, error TEXT, data_file TEXT, data_sha256 TEXT, samples INTEGER,
  parent_adapter TEXT, build TEXT, run TEXT, steps TEXT);
CREATE TABLE IF NOT EXISTS flags (key TEXT PRIMARY KEY, value TEXT);
"""
NIGHT_COLUMNS = (
    "key",
    "scheduled_for",
    "trigger",
    "started",
    "ended",
    "outcome",
    "reason",
    "failed_step",
    "error",
    "data_file",
    "data_sha256",
    "samples",
    "parent_adapter",
    "build",
    "run",
    "steps",
)


DAMAGED = ".damaged"  # a damaged database is moved aside under this suffix (core/fsutil.py), never deleted
# SQLite's codes for a file that is not (or no longer) a database; anything else (busy, read-only,
# cannot open) is a problem of the moment or of permissions, never a reason to move the file aside.
DAMAGE_CODES = ("SQLITE_NOTADB", "SQLITE_CORRUPT")


class AlreadyRecorded(Exception):
    """A night with this key exists: a scheduled time is claimed once, so a night never runs twice."""


class LedgerError(ActionableError):
    """The ledger cannot be written (read-only file or folder, no permission): one line naming it (exit 1)."""


def _unwritable(path: Path, exc: BaseException) -> LedgerError:
    what = getattr(exc, "strerror", None) or str(exc)
    if "locked" in what:  # busy for the whole 30 s timeout: another process, not the permissions
        return LedgerError(f"{path}: the nightly ledger stayed locked for 30 s ({what})", hint="try again")
    return LedgerError(
        f"{path}: cannot write the nightly ledger ({what})",
        hint=f"make {path.parent} and its files writable, or move {LEDGER_FILE} away: it is rebuilt from {NIGHTS_DIR}/",
    )


class Ledger:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.state_dir / LEDGER_FILE
        # Autocommit plus a busy timeout: the TUI, the daemon and a night's driver share the file.
        self.repaired: str | None = None  # set by open() when it moved a damaged database aside
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        try:
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
            # A file cut short or overwritten can open and fail only at a later read: look now, once.
            check = self.db.execute("PRAGMA quick_check(1)").fetchone()
        except sqlite3.DatabaseError as exc:
            self.db.close()
            if getattr(exc, "sqlite_errorname", None) in DAMAGE_CODES:
                raise
            raise _unwritable(self.path, exc) from None
        if check and check[0] != "ok":
            self.db.close()
            raise sqlite3.DatabaseError(f"database disk image is malformed ({check[0]})")

    @classmethod
    def open(cls, config: Config) -> Ledger:
        """The ledger; rebuilt from the files on disk when its database was lost, or damaged (the damaged
        file is moved aside, ``repaired`` says so for the caller to print). LedgerError when it cannot be
        written."""
        state = config.paths.state
        path = state / LEDGER_FILE
        if not path.exists() and (state / NIGHTS_DIR).is_dir():
            return rebuild(config)
        reason = _not_sqlite(path)
        if reason is None:
            try:
                return cls(state)
            except sqlite3.DatabaseError as exc:
                reason = str(exc)
        aside = _move_aside(path)
        ledger = rebuild(config)
        ledger.repaired = (
            f"{path} was damaged ({reason}): moved aside to {aside.name} and rebuilt from {state / NIGHTS_DIR} "
            "and the runs"
        )
        return ledger

    def close(self) -> None:
        self.db.close()

    # -- nights ----------------------------------------------------------------------------
    def claim_night(self, key: str, **fields: Any) -> dict:
        """Record a new night; AlreadyRecorded when ``key`` was claimed before (by any process)."""
        fields = {"started": time.time(), "outcome": NightOutcome.RUNNING, **fields, "key": key}
        try:
            self._insert("nights", fields)
        except sqlite3.IntegrityError:
            raise AlreadyRecorded(key) from None
        return self._write_night_file(key)

    def update_night(self, key: str, **fields: Any) -> dict:
        self._update("nights", "key", key, fields)
        return self._write_night_file(key)

    def night(self, key: str) -> dict | None:
        row = self.db.execute("SELECT * FROM nights WHERE key = ?", (key,)).fetchone()
        return _row(row)

    def nights(self, limit: int = 50) -> list[dict]:
        """Newest first (by scheduled time, else start)."""
        rows = self.db.execute(
            "SELECT * FROM nights ORDER BY COALESCE(scheduled_for, started) DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_row(r) for r in rows]

    def live_nights(self) -> list[dict]:
        """Nights recorded as starting or running (some may have died without saying so: catchup.py)."""
        marks = ", ".join("?" * len(LIVE_OUTCOMES))
        rows = self.db.execute(f"SELECT * FROM nights WHERE outcome IN ({marks})", tuple(LIVE_OUTCOMES)).fetchall()
        return [_row(r) for r in rows]

    def last_scheduled(self) -> float | None:
        row = self.db.execute("SELECT MAX(scheduled_for) FROM nights").fetchone()
        return row[0]

    def _write_night_file(self, key: str) -> dict:
        night = self.night(key)
        path = self.state_dir / NIGHTS_DIR / f"{key}.json"
        try:
            atomic_write_text(path, json.dumps(night, indent=1) + "\n")
        except PermissionError as exc:
            raise _unwritable(path, exc) from None
        return night

    # -- builds ----------------------------------------------------------------------------
    def upsert_build(self, build: str, **fields: Any) -> dict:
        if self.build(build) is None:
            self._insert("builds", {"build": build, "created": time.time(), **fields})
        else:
            self._update("builds", "build", build, fields)
        return self.build(build)

    def build(self, build: str) -> dict | None:
        return _row(self.db.execute("SELECT * FROM builds WHERE build = ?", (build,)).fetchone())

    def builds(self) -> list[dict]:
        """Newest first."""
        return [_row(r) for r in self.db.execute("SELECT * FROM builds ORDER BY created DESC").fetchall()]

    def promoted(self) -> list[dict]:
        """Promoted builds, the most recently promoted first."""
        rows = self.db.execute("SELECT * FROM builds WHERE promoted = 1 ORDER BY promoted_at DESC").fetchall()
        return [_row(r) for r in rows]

    def last_promoted_adapter(self) -> str | None:
        return next((b["adapter"] for b in self.promoted() if b["adapter"]), None)

    def lineage_data(self, adapter: str | None) -> dict[str, str]:
        """sha256 -> build for every data file trained into ``adapter`` and its ancestors."""
        seen: dict[str, str] = {}
        while adapter:
            row = self.db.execute("SELECT * FROM builds WHERE adapter = ?", (adapter,)).fetchone()
            if row is None or row["build"] in seen.values():
                break
            for sha in (json.loads(row["data"] or "{}")).values():
                seen.setdefault(sha, row["build"])
            adapter = row["parent_adapter"]
        return seen

    # -- flags (pause, skip): any process may set them, the scheduler's holder reads them --------
    def flag(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM flags WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_flag(self, key: str, value: str | None) -> None:
        if value is None:
            self._write("DELETE FROM flags WHERE key = ?", (key,))
        else:
            self._write("INSERT OR REPLACE INTO flags (key, value) VALUES (?, ?)", (key, value))

    def check_writable(self) -> None:
        """LedgerError now, rather than from a night that has already started."""
        self._write("DELETE FROM flags WHERE key = ?", ("",))
        nights = self.state_dir / NIGHTS_DIR
        if not os.access(nights if nights.exists() else self.state_dir, os.W_OK):
            raise _unwritable(nights, PermissionError("permission denied"))

    # -- plumbing ----------------------------------------------------------------------------
    def _insert(self, table: str, fields: dict) -> None:
        fields = _encode(fields)
        names = ", ".join(fields)
        self._write(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(fields))})", tuple(fields.values()))

    def _update(self, table: str, key_column: str, key: str, fields: dict) -> None:
        if fields:
            fields = _encode(fields)
            sets = ", ".join(f"{name} = ?" for name in fields)
            self._write(f"UPDATE {table} SET {sets} WHERE {key_column} = ?", (*fields.values(), key))

    def _write(self, sql: str, params: tuple) -> None:
        try:
            self.db.execute(sql, params)
        except sqlite3.IntegrityError:
            raise
        except sqlite3.OperationalError as exc:  # read-only file or folder; a busy database waited 30 s
            raise _unwritable(self.path, exc) from None


def _encode(fields: dict) -> dict:
    return {k: json.dumps(v) if k in JSON_COLUMNS and v is not None else v for k, v in fields.items()}


def _row(row: sqlite3.Row | None) -> dict | None:
    if row is None:
        return None
    out = dict(row)
    for key in JSON_COLUMNS:
        if out.get(key) is not None:
            out[key] = json.loads(out[key])
    return out


def _not_sqlite(path: Path) -> str | None:
    """Why ``path`` is plainly not a database, asked through a read-only connection: a writable one to a
    file that is not a database deletes the -wal beside it on close, and nothing of a damaged ledger is
    deleted. (Not with open()/close() of our own: closing any descriptor of the file drops this process's
    SQLite locks on it, and another process then takes itself for the last user and removes the -shm
    under our live connections.)"""
    if not path.exists():
        return None
    try:
        probe = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return None  # unreadable: the real open says why
    try:
        probe.execute("PRAGMA schema_version").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc) if getattr(exc, "sqlite_errorname", None) in DAMAGE_CODES else None
    finally:
        probe.close()
    return None


def _move_aside(path: Path) -> Path:
    try:
        return move_aside(path, DAMAGED)
    except OSError as exc:
        raise _unwritable(path, exc) from None


def rebuild(config: Config) -> Ledger:
    """Recreate the ledger from the files on disk: night records, then each night's build from its runs."""
    state = config.paths.state
    for suffix in ("", "-wal", "-shm"):
        (state / f"{LEDGER_FILE}{suffix}").unlink(missing_ok=True)
    ledger = Ledger(state)
    runner = Runner(config)
    nights = []
    for path in sorted((state / NIGHTS_DIR).glob("*.json")):
        try:
            nights.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    for night in sorted(nights, key=lambda n: n.get("started") or 0):
        ledger._insert("nights", {k: night.get(k) for k in NIGHT_COLUMNS})
        if not night.get("build"):
            continue
        fields: dict[str, Any] = {"night": night["key"]}
        for step in night.get("steps") or []:
            try:
                fields = build_fields(runner.get(step["run"]), fields)
            except RunError:
                continue  # a run dir removed by hand: the build keeps what the other runs say
        ledger.upsert_build(night["build"], **fields)
        ledger._update("builds", "build", night["build"], {"created": night.get("started")})
    _rebuild_imports(config, ledger)
    replay(config, ledger)
    return ledger


def _rebuild_imports(config: Config, ledger: Ledger) -> None:
    """Builds that `w4tui adapter import` registered: each has its import.json beside the adapter."""
    for lineage in sorted((config.paths.outputs / "adapters").glob(f"*/{IMPORT_FILE}")):
        adapter = lineage.parent
        if ledger.build(adapter.name) is not None:
            continue
        try:
            imported = json.loads(lineage.read_text())
        except (OSError, ValueError):
            continue
        record = training_record(adapter)
        ledger.upsert_build(
            adapter.name,
            adapter=str(adapter),
            base_model=imported.get("base_model"),
            data=record.get("data") or {},
            hparams=record.get("hparams") or {},
        )
        if isinstance(imported.get("imported_at"), int | float):
            ledger._update("builds", "build", adapter.name, {"created": imported["imported_at"]})
