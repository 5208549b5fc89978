"""The status store of the embedded backend: one SQLite database in the workspace (WAL, one writer).

The local runner's scheduler is the only writer; `merlin-mdm status` reads concurrently. Counting per unit
keeps a 1,000,000-sample study at 10,000 rows, and every query is an aggregate over an index.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote

from merlin_mdm.errors import StatusError
from merlin_mdm.status.model import StepSummary, StudySnapshot, StudyState, TaskFailure, TaskState, UnitOutcome
from merlin_mdm.status.store import StatusStore
from merlin_mdm.study.plan import StudyPlan, UnitKey

__all__ = ["MAX_DB_PATH", "SqliteStatusStore", "too_long"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS instances (idx INTEGER PRIMARY KEY, step TEXT, name TEXT, n_tasks INTEGER);
CREATE TABLE IF NOT EXISTS units (
  instance INTEGER, unit INTEGER, n INTEGER, state TEXT, finished INTEGER DEFAULT 0, failed INTEGER DEFAULT 0,
  not_run INTEGER DEFAULT 0, restarts INTEGER DEFAULT 0, attempts INTEGER DEFAULT 0, started REAL, ended REAL,
  host TEXT, run_s REAL, run_n INTEGER, PRIMARY KEY (instance, unit)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS failures (instance INTEGER, unit INTEGER, sample INTEGER, state TEXT, rc INTEGER,
  reason TEXT, log TEXT);
CREATE INDEX IF NOT EXISTS failures_unit ON failures (instance, unit);
"""
MAX_FAILURES_SHOWN = 20
# Columns added since the first schema, with their types: a database written before them gains them when a
# writer opens it; a reader of such a database sees them as empty.
_ADDED_COLUMNS = {"run_s": "REAL", "run_n": "INTEGER"}  # the last run's seconds and tasks, when it ran to its end


MAX_DB_PATH = 504  # bytes: SQLite opens paths of at most 512 bytes, its journal file adds "-journal" (measured)


def too_long(path: Path) -> str:
    """Why a status database cannot be at ``path``, and what to do."""
    return (f"the status database path {path} is {len(os.fsencode(path))} bytes; SQLite opens at most "
            f"{MAX_DB_PATH}: choose a shorter OUTPUT_PATH or study name")


def rebuild_hint(path: Path, exc: object = "damaged") -> str:
    """What to do about a damaged database at ``path`` (merlin_info/status.db): it is an index of the done-markers,
    which `restart` rebuilds it from; "" for an error that is no damage."""
    if not any(word in str(exc) for word in ("malformed", "not a database", "damaged", "empty")):
        return ""
    return (f"; it can be rebuilt: delete it (and any {path.name}-wal, {path.name}-shm beside it), then "
            f"`merlin-mdm restart {path.parent.parent}` records the finished tasks from their done-markers and runs "
            "the rest")


class SqliteStatusStore(StatusStore):
    """StatusStore in ``<workspace>/merlin_info/status.db``."""

    def __init__(self, path: Path | str, readonly: bool = False):
        self.path = Path(path)
        if readonly and not self.path.exists():
            raise StatusError(f"no status database at {self.path}; was the study started?")
        if len(os.fsencode(self.path.absolute())) > MAX_DB_PATH:
            raise StatusError(too_long(self.path.absolute()))
        try:
            where = quote(os.fspath(self.path), safe="/")  # a URI: ?, # and % in a folder name are escaped
            uri = f"file:{where}?mode=ro" if readonly else f"file:{where}"
            self.db = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
            if readonly:
                self._readable(where)
            else:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
                self.db.executescript(SCHEMA)
            missing = [c for c in _ADDED_COLUMNS if c not in self._unit_columns()]
            if missing and not readonly:
                for column in missing:
                    self.db.execute(f"ALTER TABLE units ADD COLUMN {column} {_ADDED_COLUMNS[column]}")
                missing = []
            self.timed = not missing
        except sqlite3.Error as exc:
            raise StatusError(f"cannot open the status database {self.path}: {exc}{rebuild_hint(self.path, exc)}") \
                from None

    def _readable(self, where: str) -> None:
        """A database in WAL mode is read through its shared-memory file, which a reader who may not write the
        folder cannot make ("attempt to write a readonly database"): such a reader (a read-only workspace, another
        user's study) reads the database file as it is, without the log's latest writes."""
        try:
            self.db.execute("SELECT 1 FROM meta LIMIT 1").fetchall()
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc):
                raise
            self.db.close()
            self.db = sqlite3.connect(f"file:{where}?mode=ro&immutable=1", uri=True, timeout=30,
                                      isolation_level=None)

    def _unit_columns(self) -> set[str]:
        return {row[1] for row in self.db.execute("PRAGMA table_info(units)")}

    def _tx(self, sql: str, rows: Iterable[tuple[object, ...]] = ()) -> None:
        self._tx_all([(sql, rows)])

    def _tx_all(self, statements: Iterable[tuple[str, Iterable[tuple[object, ...]]]]) -> None:
        """Run every (sql, rows) in one transaction."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            for sql, rows in statements:
                self.db.executemany(sql, rows) if rows else self.db.execute(sql)
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.db.execute("ROLLBACK") if self.db.in_transaction else None
            hint = "; free space on its file system, then `merlin-mdm restart` resumes the study" \
                if "disk is full" in str(exc) else ""
            raise StatusError(f"status database {self.path}: {exc}{hint}") from None

    def register(self, plan: StudyPlan) -> None:
        inst_rows = [(i.index, i.step, i.name, plan.n_tasks(i.index)) for i in plan.instances]
        self._tx("INSERT OR IGNORE INTO instances VALUES (?, ?, ?, ?)", inst_rows)
        unit_rows = ((k.instance, k.unit, len(plan.unit_samples(k)), TaskState.QUEUED.value) for k in plan.units())
        self._tx("INSERT OR IGNORE INTO units (instance, unit, n, state) VALUES (?, ?, ?, ?)", list(unit_rows))
        self._tx("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                 [("name", plan.name), ("workspace", plan.workspace), ("state", StudyState.CREATED.value),
                  ("message", "")])

    def unit_started(self, key: UnitKey, host: str, when: float) -> None:
        self._tx("UPDATE units SET state='running', attempts=attempts+1, host=?, started=COALESCE(started, ?) "
                 "WHERE instance=? AND unit=? AND state NOT IN ('done')", [(host, when, key.instance, key.unit)])

    def unit_progress(self, key: UnitKey, done: int) -> None:
        self._tx("UPDATE units SET finished=MIN(n, MAX(finished, ?)) WHERE instance=? AND unit=? "
                 "AND state IN ('queued', 'running', 'restarted')", [(done, key.instance, key.unit)])

    def unit_restarted(self, key: UnitKey, reason: str) -> None:
        self._tx("UPDATE units SET state='restarted' WHERE instance=? AND unit=? AND state != 'done'",
                 [(key.instance, key.unit)])

    def unit_finished(self, key: UnitKey, outcome: UnitOutcome) -> bool:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            run_n, run_s = outcome.run_time or (None, None)
            cur = self.db.execute(
                "UPDATE units SET state='done', finished=?, failed=?, not_run=?, restarts=restarts+?, "
                "started=COALESCE(started, ?), ended=?, host=?, run_s=?, run_n=? "
                "WHERE instance=? AND unit=? AND state != 'done'",
                (outcome.finished, outcome.failed, outcome.not_run, outcome.restarts, outcome.started,
                 outcome.ended, outcome.host, run_s, run_n,
                 key.instance, key.unit))
            changed = cur.rowcount > 0
            if changed and outcome.failures:
                self.db.executemany("INSERT INTO failures VALUES (?, ?, ?, ?, ?, ?, ?)", [
                    (key.instance, key.unit, f.sample, f.state.value, f.rc, f.reason, f.log)
                    for f in outcome.failures])
            self.db.execute("COMMIT")
            return changed
        except sqlite3.Error as exc:
            self.db.execute("ROLLBACK") if self.db.in_transaction else None
            hint = "; free space on its file system, then `merlin-mdm restart` resumes the study" \
                if "disk is full" in str(exc) else ""
            raise StatusError(f"status database {self.path}: {exc}{hint}") from None

    def units_not_run(self, keys: Iterable[UnitKey], reason: str) -> None:
        rows = [(key.instance, key.unit) for key in keys]
        if not rows:
            return
        # a unit already recorded keeps its outcome and gets no failure row (the failure first: it selects
        # the units not yet done)
        self._tx_all([
            ("INSERT INTO failures SELECT instance, unit, -1, 'not_run', NULL, ?, '' FROM units "
             "WHERE instance=? AND unit=? AND state != 'done'", [(reason, i, u) for i, u in rows]),
            ("UPDATE units SET state='done', not_run=n, finished=0, failed=0, ended=NULL, run_s=NULL, run_n=NULL "
             "WHERE instance=? AND unit=? AND state != 'done'", rows)])

    def set_state(self, state: StudyState, message: str = "") -> None:
        self._tx("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                 [("state", state), ("message", message), ("updated", str(time.time()))])

    def finished_units(self) -> set[UnitKey]:
        rows = self.db.execute("SELECT instance, unit FROM units WHERE state='done' AND finished=n")
        return {UnitKey(i, u) for i, u in rows}

    def reset_unfinished(self) -> list[UnitKey]:
        rows = self.db.execute("SELECT instance, unit FROM units WHERE NOT (state='done' AND finished=n)")
        keys = [UnitKey(i, u) for i, u in rows]
        self._tx("UPDATE units SET state='queued', finished=0, failed=0, not_run=0, ended=NULL, run_s=NULL, "
                 "run_n=NULL "
                 "WHERE NOT (state='done' AND finished=n)")
        self._tx("DELETE FROM failures WHERE (instance, unit) IN "
                 "(SELECT instance, unit FROM units WHERE state='queued')")
        return keys

    def unfinished_units(self) -> list[UnitKey]:
        rows = self.db.execute("SELECT instance, unit FROM units WHERE NOT (state='done' AND finished=n)")
        return [UnitKey(i, u) for i, u in rows]

    def units_in_flight(self) -> list[UnitKey]:
        rows = self.db.execute("SELECT instance, unit FROM units WHERE state IN ('running', 'restarted')")
        return [UnitKey(i, u) for i, u in rows]

    def requeue(self, finished: Mapping[UnitKey, int]) -> None:
        rows = [(done, key.instance, key.unit) for key, done in finished.items()]
        if not rows:
            return
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("UPDATE units SET state='queued', finished=MIN(n, ?), failed=0, not_run=0, "
                                "ended=NULL, run_s=NULL, run_n=NULL WHERE instance=? AND unit=?", rows)
            self.db.executemany("DELETE FROM failures WHERE instance=? AND unit=?", [r[1:] for r in rows])
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.db.execute("ROLLBACK") if self.db.in_transaction else None
            hint = "; free space on its file system, then `merlin-mdm restart` resumes the study" \
                if "disk is full" in str(exc) else ""
            raise StatusError(f"status database {self.path}: {exc}{hint}") from None

    def snapshot(self, every_failure: bool = False) -> StudySnapshot:
        try:
            meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
            steps = self._step_rows(-1 if every_failure else MAX_FAILURES_SHOWN)
        except sqlite3.Error as exc:
            raise StatusError(f"cannot read the status database {self.path}: {exc}") from None
        return StudySnapshot(meta.get("name", ""), meta.get("workspace", ""), StudyState.parse(meta.get("state")),
                             meta.get("message", ""), tuple(steps))

    def _step_rows(self, shown: int) -> list[StepSummary]:
        # Sum the units of each instance first (in primary-key order, no join per unit), then join the few
        # per-instance rows with their steps: O(units) of cheap work, a few milliseconds per 100,000 units.
        runs = ("SUM(run_n) AS run_n, SUM(run_s) AS run_s, SUM(run_s * run_s / run_n) AS run_sq" if self.timed
                else "0 AS run_n, 0 AS run_s, 0 AS run_sq")  # a database from before run times were kept
        rows = self.db.execute(f"""
            SELECT i.step, COUNT(*), SUM(u.n), SUM(u.queued), SUM(u.running), SUM(u.restarted), SUM(u.finished),
              SUM(u.failed), SUM(u.not_run), SUM(u.restarts), MIN(u.started), MAX(u.ended), SUM(u.run_n),
              SUM(u.run_s), SUM(u.run_sq), MIN(i.idx)
            FROM (SELECT instance, SUM(n) AS n, {runs},
                    SUM(CASE WHEN state='queued' THEN n - finished ELSE 0 END) AS queued,
                    SUM(CASE WHEN state='running' THEN n - finished ELSE 0 END) AS running,
                    SUM(CASE WHEN state='restarted' THEN n - finished ELSE 0 END) AS restarted,
                    SUM(finished) AS finished, SUM(failed) AS failed, SUM(not_run) AS not_run,
                    SUM(restarts) AS restarts, MIN(started) AS started, MAX(ended) AS ended
                  FROM units GROUP BY instance) u
            JOIN instances i ON i.idx = u.instance GROUP BY i.step ORDER BY MIN(i.idx)""").fetchall()
        out = []
        for (step, n_inst, total, queued, running, restarted, fin, failed, not_run, restarts, t0, t1, run_n, run_s,
             run_sq, _) in rows:
            counts = {TaskState.QUEUED.value: queued, TaskState.RUNNING.value: running,
                      TaskState.RESTARTED.value: restarted, TaskState.FINISHED.value: fin,
                      TaskState.FAILED.value: failed, TaskState.NOT_RUN.value: not_run}
            failures, n_fail = self._failures(step, shown)
            out.append(StepSummary(step, n_inst, total, counts, restarts, t0, t1, failures, n_fail, run_n or 0,
                                   run_s or 0.0, run_sq or 0.0))
        return out

    def _failures(self, step: str, shown: int) -> tuple[tuple[tuple[str, TaskFailure], ...], int]:
        rows = self.db.execute(
            "SELECT i.name, f.sample, f.state, f.rc, f.reason, f.log FROM failures f JOIN instances i "
            "ON i.idx = f.instance WHERE i.step = ? ORDER BY f.instance, f.sample LIMIT ?",
            (step, shown)).fetchall()  # LIMIT -1: every one
        count = self.db.execute("SELECT COUNT(*) FROM failures f JOIN instances i ON i.idx = f.instance "
                                "WHERE i.step = ?", (step,)).fetchone()[0]
        return tuple((name, TaskFailure(s, TaskState(st), rc, reason, log)) for name, s, st, rc, reason, log
                     in rows), int(count)

    def close(self) -> None:
        self.db.close()
