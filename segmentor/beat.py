"""Celery beat that fires only while it leads, so two beat processes never fire a schedule twice.

django-celery-beat's ``DatabaseScheduler`` keeps the schedule in PostgreSQL but takes no lock: two
beat processes (a second one started by mistake, or one per machine for availability) each fire
every entry, and a one-off entry twice. ``LeaderScheduler`` ticks only while it holds a
session-level PostgreSQL advisory lock on a connection of its own (``LeaderLock``):

- the first beat to take the lock leads; any other one tries again every ``FOLLOWER_POLL_SECONDS``
  and fires nothing meanwhile;
- the lock lives as long as the leader's session: a leader that dies releases it at once (its
  socket closes), a leader whose machine vanishes within about 25 s (server-side TCP keepalives),
  and a follower takes over at its next try;
- a leader that loses its lock connection (a database restart) stops firing at once and competes
  again once the database is back;
- a new leader reads the whole schedule again, and a leader writes an entry's last run right after
  firing it (``sync_every_tasks = 1``, where Celery waits up to three minutes), so a takeover does
  not fire again what the last leader fired. A leader killed in the milliseconds between sending
  a task and writing its last run leaves that one occurrence to fire again: the tasks are
  idempotent for that (a campaign occurrence makes one ``CampaignRun``, unique per occurrence).

On SQLite (the embedded default, one beat in ``make run``) there is no advisory lock: it always leads.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import psycopg
from django.db import DatabaseError, connection
from django_celery_beat.schedulers import DatabaseScheduler

logger = logging.getLogger(__name__)

# Advisory lock (two-key form: class, key) of the beat leader; the classes 0x5E6 and 0x5E7 are
# taken by event ingest and event summaries.
LEADER_LOCK = (0x5EB, 1)
FOLLOWER_POLL_SECONDS = 5.0
# The client notices a vanished server, and the server a vanished leader (then unlocks), after
# about idle + interval × count seconds of silence.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 10, 5, 3


class LeaderLock:
    """A session-level advisory lock on a connection of its own: held for as long as that session lives."""

    def __init__(self, key: tuple[int, int] = LEADER_LOCK) -> None:
        self.key = key
        self.leading = False
        self._connection: psycopg.Connection[Any] | None = None

    def held(self) -> bool:
        """Whether this process leads now; take the lock when it is free."""
        try:
            conn = self._connection or self._connect()
            if self.leading:
                conn.execute("SELECT 1")  # the session, and with it the lock, is still there
            else:
                row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", self.key).fetchone()
                self.leading = bool(row and row[0])
        except psycopg.Error as error:
            if self.leading:
                logger.warning("beat.leader_lock_lost", extra={"error": type(error).__name__})
            self.release()
        return self.leading

    def release(self) -> None:
        """Give the lock up (closing the session releases it)."""
        self.leading = False
        if self._connection is not None:
            with contextlib.suppress(psycopg.Error):
                self._connection.close()
            self._connection = None

    def _connect(self) -> psycopg.Connection[Any]:
        params = connection.get_connection_params()
        for name in ("cursor_factory", "context", "prepare_threshold"):
            params.pop(name, None)
        conn = psycopg.connect(
            **params, autocommit=True, application_name="segmentor beat", connect_timeout=5, keepalives=1,
            keepalives_idle=KEEPALIVE_IDLE, keepalives_interval=KEEPALIVE_INTERVAL, keepalives_count=KEEPALIVE_COUNT,
        )  # fmt: skip
        for name, value in (
            ("tcp_keepalives_idle", KEEPALIVE_IDLE),
            ("tcp_keepalives_interval", KEEPALIVE_INTERVAL),
            ("tcp_keepalives_count", KEEPALIVE_COUNT),
        ):
            conn.execute("SELECT set_config(%s, %s, false)", [name, str(value)])
        self._connection = conn
        return conn


class LeaderScheduler(DatabaseScheduler):
    """``DatabaseScheduler`` that fires only while it holds the leader lock (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.lock = LeaderLock() if connection.vendor == "postgresql" else None
        self.leading = self.lock is None
        # Write each entry's last run as soon as it fired: a takeover reads it.
        kwargs.setdefault("sync_every_tasks", 1)
        super().__init__(*args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if self.lock is None:
            return float(super().tick(*args, **kwargs))
        leads = self.lock.held()
        if leads and not self.leading:
            logger.info("beat.leading")
            self._read_again()
        elif self.leading and not leads:
            logger.warning("beat.not_leading")
        self.leading = leads
        if not leads:
            return self._poll_interval()
        try:
            return float(super().tick(*args, **kwargs))
        except DatabaseError as error:
            # The database went away under the leader: step down (a peer that can reach it takes over)
            # instead of ending the beat process.
            logger.warning("beat.database_error", extra={"error": type(error).__name__})
            self.lock.release()
            self.leading = False
            return self._poll_interval()

    def _poll_interval(self) -> float:
        return min(float(self.max_interval), FOLLOWER_POLL_SECONDS)

    def _read_again(self) -> None:
        """Forget what this process knew of the schedule: the last leader's runs are in the database."""
        self._dirty.clear()
        self._last_timestamp = self.Changes.last_change()  # what the read below already includes
        self._initial_read = True
        self._heap = None
        self.old_schedulers = None

    def reserve(self, entry: Any) -> Any:
        new_entry = super().reserve(entry)
        # Keep the fired entry's successor in the schedule (django-celery-beat keeps the old entry):
        # a heap rebuilt from the schedule after a change seen mid-tick must not find the old last
        # run and fire the entry again.
        if self._schedule is not None and new_entry.name in self._schedule:
            self._schedule[new_entry.name] = new_entry
        return new_entry

    def sync(self) -> None:
        # A follower's entries are stale: only the leader writes last runs.
        if self.leading:
            super().sync()

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.lock is not None:
                self.lock.release()
