"""The node's durable state: received instances on disk (fsync + atomic rename) and a SQLite job queue (WAL).

A series moves through states, each change one committed transaction:

    receiving ─(quiet period)─► queued ─► ready (SEG written) ─► delivered
    fetching (DICOMweb) ───────┘      └─► skipped (no route) / failed (cannot be segmented)

A node killed at any point restarts from the last committed state: `processing` work is simply
redone (the SEG's UIDs are derived from the source series and the bundle, so a SEG written or even
delivered twice replaces itself at the PACS instead of appearing twice).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgemed.errors import OutputError

__all__ = ["Queue", "series_key", "write_durably"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    key TEXT PRIMARY KEY,            -- sha256 of the SeriesInstanceUID (what logs and metrics show, shortened)
    series_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    source TEXT NOT NULL,            -- dimse | dicomweb
    state TEXT NOT NULL,
    instances INTEGER NOT NULL DEFAULT 0,
    remote_count INTEGER,            -- DICOMweb: NumberOfSeriesRelatedInstances when last seen
    first_at REAL NOT NULL,
    last_instance_at REAL NOT NULL,  -- wall clock of the last instance received (or of the last change seen)
    bundle TEXT,
    seg_path TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_at REAL NOT NULL DEFAULT 0,
    error TEXT,                      -- redacted
    segment_s REAL,
    deliver_s REAL,
    delivered_at REAL,
    qc TEXT                          -- the runtime's QC verdict: ok | warn | fail
);
CREATE INDEX IF NOT EXISTS series_state ON series(state);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value REAL NOT NULL);
"""

PENDING = ("receiving", "fetching", "queued", "ready")


def series_key(series_uid: str) -> str:
    """The name a series goes by in the node's logs, metrics and folders: no UID, no identifier."""
    return hashlib.sha256(series_uid.encode()).hexdigest()[:16]


def write_durably(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that once this returns it survives a crash: temp file, fsync, rename, fsync dir."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Queue:
    """The SQLite job queue in the node's folder (WAL, synchronous=FULL; one connection per thread)."""

    def __init__(self, folder: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.folder = Path(folder)
        self.path = self.folder / "queue.sqlite"
        self._read_only = read_only
        self._local = threading.local()
        if not read_only:
            self.folder.mkdir(parents=True, exist_ok=True)
            try:
                self._connect().executescript(_SCHEMA)  # runs in its own transaction
            except sqlite3.Error as err:
                raise OutputError(f"cannot open the node's queue {self.path} ({err}); check [node] folder (a "
                                  "local disk the node may write; not a network share, which SQLite's WAL needs "
                                  "to avoid).") from err

    def _connect(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            if self._read_only:
                db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30, isolation_level=None)
            else:
                db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=FULL")
            db.row_factory = sqlite3.Row
            self._local.db = db
        return db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One committed transaction (BEGIN IMMEDIATE: writers queue up instead of failing)."""
        db = self._connect()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def rows(self, sql: str, *args: object) -> list[sqlite3.Row]:
        return self._connect().execute(sql, args).fetchall()

    # -- receiving -----------------------------------------------------------------------------------

    def instance_received(self, series_uid: str, study_uid: str, source: str) -> str:
        """Record one instance of a series (already durably on disk); returns the series key."""
        key, now = series_key(series_uid), time.time()
        with self.transaction() as db:
            row = db.execute("SELECT state FROM series WHERE key=?", (key,)).fetchone()
            if row is None:
                db.execute("INSERT INTO series(key, series_uid, study_uid, source, state, instances, first_at, "
                           "last_instance_at) VALUES (?, ?, ?, ?, 'receiving', 1, ?, ?)",
                           (key, series_uid, study_uid, source, now, now))
            else:
                # An instance of a series already done re-opens it: the SEG is recomputed and, having the
                # same UIDs, replaces the earlier one at the PACS.
                db.execute("UPDATE series SET instances=instances+1, last_instance_at=?, state=CASE WHEN state IN "
                           "('delivered', 'skipped', 'failed', 'queued', 'ready') THEN 'receiving' ELSE state END, "
                           "attempts=0, error=NULL WHERE key=?", (now, key))
        return key

    def images(self, key: str) -> Path:
        return self.folder / "incoming" / key

    def result_path(self, key: str) -> Path:
        return self.folder / "results" / f"{key}.dcm"

    # -- the worker's steps --------------------------------------------------------------------------

    def close_quiet(self, quiet_period_s: float) -> list[str]:
        """Series whose last instance came more than the quiet period ago are complete: queue them."""
        cutoff = time.time() - quiet_period_s
        with self.transaction() as db:
            keys = [r["key"] for r in db.execute("SELECT key FROM series WHERE state='receiving' AND "
                                                 "last_instance_at <= ?", (cutoff,))]
            db.executemany("UPDATE series SET state='queued' WHERE key=?", [(k,) for k in keys])
        return keys

    def next_queued(self) -> sqlite3.Row | None:
        rows = self.rows("SELECT * FROM series WHERE state='queued' ORDER BY last_instance_at LIMIT 1")
        return rows[0] if rows else None

    def next_ready(self) -> sqlite3.Row | None:
        rows = self.rows("SELECT * FROM series WHERE state='ready' AND next_try_at <= ? ORDER BY next_try_at LIMIT 1",
                         time.time())
        return rows[0] if rows else None

    def set_state(self, key: str, state: str, *, only_from: str | None = None, **values: object) -> bool:
        """Move a series to `state` (setting columns `values`); with `only_from`, only if it is still in that
        state (a series re-opened by a new instance meanwhile stays open). Returns whether it moved."""
        cols = ", ".join(f"{k}=?" for k in values)
        guard = " AND state=?" if only_from is not None else ""
        with self.transaction() as db:
            return db.execute(f"UPDATE series SET state=?{', ' + cols if cols else ''} WHERE key=?{guard}",
                              (state, *values.values(), key, *([only_from] if only_from else []))).rowcount > 0

    def delivery_failed(self, key: str, error: str, *, initial_s: float, max_s: float) -> float:
        """Count a failed delivery and schedule the next try (exponential backoff); returns the delay."""
        with self.transaction() as db:
            attempts = db.execute("SELECT attempts FROM series WHERE key=?", (key,)).fetchone()["attempts"] + 1
            delay = min(max_s, initial_s * 2 ** (attempts - 1))
            db.execute("UPDATE series SET attempts=?, next_try_at=?, error=? WHERE key=?",
                       (attempts, time.time() + delay, error, key))
            self._bump(db, "delivery_failures")
        return delay

    def bump(self, name: str, by: float = 1.0) -> None:
        with self.transaction() as db:
            self._bump(db, name, by)

    @staticmethod
    def _bump(db: sqlite3.Connection, name: str, by: float = 1.0) -> None:
        db.execute("INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value=value+?",
                   (name, by, by))

    # -- DICOMweb ----------------------------------------------------------------------------------

    def remote_seen(self, series_uid: str, study_uid: str, count: int) -> str | None:
        """A series seen on the PACS with `count` instances; returns its key once the count held for the quiet
        period (then it is marked `fetching`), else None. Series the node already knows are ignored."""
        key, now = series_key(series_uid), time.time()
        with self.transaction() as db:
            row = db.execute("SELECT state, remote_count FROM series WHERE key=?", (key,)).fetchone()
            if row is None:
                db.execute("INSERT INTO series(key, series_uid, study_uid, source, state, remote_count, first_at, "
                           "last_instance_at) VALUES (?, ?, ?, 'dicomweb', 'fetching', ?, ?, ?)",
                           (key, series_uid, study_uid, count, now, now))
                return None
            if row["state"] != "fetching" or row["remote_count"] is None:
                return None
            if row["remote_count"] != count:
                db.execute("UPDATE series SET remote_count=?, last_instance_at=? WHERE key=?", (count, now, key))
                return None
        return key

    def remote_stable(self, quiet_period_s: float) -> list[sqlite3.Row]:
        """Series seen on the PACS whose instance count has not changed for the quiet period."""
        return self.rows("SELECT * FROM series WHERE state='fetching' AND remote_count IS NOT NULL AND "
                         "last_instance_at <= ?", time.time() - quiet_period_s)

    def fetched(self, key: str, instances: int) -> None:
        """All instances of a DICOMweb series are on disk: the series is complete, queue it."""
        with self.transaction() as db:
            db.execute("UPDATE series SET state='queued', instances=?, remote_count=NULL, last_instance_at=? "
                       "WHERE key=?", (instances, time.time(), key))

    # -- status --------------------------------------------------------------------------------------

    def summary(self) -> dict[str, object]:
        """Counts by state, the queue length, counters and stage latency sums (what /metrics and --status show)."""
        states = {r["state"]: r["n"] for r in self.rows("SELECT state, COUNT(*) AS n FROM series GROUP BY state")}
        counters = {r["name"]: r["value"] for r in self.rows("SELECT name, value FROM counters")}
        qc = {r["qc"]: r["n"] for r in self.rows("SELECT qc, COUNT(*) AS n FROM series WHERE qc IS NOT NULL "
                                                 "GROUP BY qc")}
        lat = self.rows("SELECT segment_s, deliver_s, delivered_at - last_instance_at AS total_s FROM series "
                        "WHERE state='delivered'")
        waiting = self.rows("SELECT MIN(first_at) AS t, MAX(attempts) AS attempts FROM series WHERE state IN "
                            f"({', '.join('?' * len(PENDING))})", *PENDING)[0]
        errors = self.rows("SELECT key, state, error FROM series WHERE error IS NOT NULL ORDER BY last_instance_at "
                           "DESC LIMIT 3")
        return {
            "states": states,
            "queue_length": sum(states.get(s, 0) for s in PENDING),
            "series_done": states.get("delivered", 0),
            "failures": {"segment": states.get("failed", 0), "delivery": int(counters.get("delivery_failures", 0))},
            "qc_verdicts": qc,
            "latency_s": {stage: [r[f"{stage}_s"] for r in lat if r[f"{stage}_s"] is not None]
                          for stage in ("segment", "deliver", "total")},
            "oldest_pending_age_s": None if waiting["t"] is None else time.time() - waiting["t"],
            "max_delivery_attempts": waiting["attempts"] or 0,
            "recent_errors": [{"series": r["key"], "state": r["state"], "error": r["error"]} for r in errors],
        }
