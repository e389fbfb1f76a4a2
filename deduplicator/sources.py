"""Gatherer databases as seen by the deduplicator: connections, checks, and reachability state.

Every new connection to a gatherer (as ``dedup_reader``) is checked before use:

- schema version: ``schema_migrations`` max version must be >= ``schema_version("gatherer")``
  of this code base (missing table: 0), else ``SchemaTooOld`` refuses this gatherer only;
- identity: ``gatherer_meta.db_uuid`` travels with the connection so the page transaction can
  compare it with the uuid stored beside the cursor (cursors.py, ``CursorMismatch``).

State is what /health and ``dedup_gatherer_health`` show: ``starting`` (never reached yet),
``healthy``, ``down`` (with the connection error) or ``refused`` (schema/identity; the loops
re-check slowly, so a migration or ``--reset-cursor`` takes effect without a restart).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import psycopg

from deduplicator._slots import Slots
from deduplicator.config import GathererSource as GathererConfig
from deduplicator.errors import GathererRefused, SchemaTooOld
from deduplicator.pull import database_uuid, schema_version
from shared.db import classify, connect
from shared.logging import RateLimitedLog
from shared.pool_metrics import PoolStats

State = Literal["starting", "healthy", "down", "refused"]

log = logging.getLogger("deduplicator.sources")


@dataclass(frozen=True)
class GathererConn:
    """A checked gatherer connection and the identity of the database behind it."""

    conn: psycopg.AsyncConnection[Any]
    db_uuid: str


class Source:
    """One configured gatherer: its connection slots and reachability state."""

    def __init__(self, cfg: GathererConfig, required_version: int, slots: int) -> None:
        self.cfg = cfg
        self.id = cfg.id
        self.required_version = required_version
        self.db_uuid: str | None = None
        self.schema: int | None = None
        self._slots: Slots[GathererConn] = Slots(self._open, lambda g: g.conn, slots)
        self._rl = RateLimitedLog(log, 60.0)
        self._reached = False
        self._down: str | None = None
        self._schema_refusal: str | None = None
        self._identity_refusals: dict[str, str] = {}

    # -- state ------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        if self.refused:
            return "refused"
        if self._down is not None:
            return "down"
        return "healthy" if self._reached else "starting"

    @property
    def refused(self) -> bool:
        return self._schema_refusal is not None or bool(self._identity_refusals)

    @property
    def error(self) -> str | None:
        if self._schema_refusal is not None:
            return self._schema_refusal
        if self._identity_refusals:
            return next(iter(self._identity_refusals.values()))
        return self._down

    @property
    def healthy(self) -> bool:
        return self.state == "healthy"

    def mark_up(self) -> None:
        """A statement on this gatherer just succeeded."""
        if self.state != "healthy" and not self.refused:
            log.info("connected to %s (%s, schema %s, db_uuid %s)", self.id, self.display_name,
                     self.schema, self.db_uuid, extra={"gatherer_id": self.id})
        self._reached, self._down = True, None

    def mark_down(self, error: str) -> None:
        if self._down != error:
            self._rl.log(logging.WARNING, f"down:{error}", "%s (%s) unreachable: %s", self.id,
                         self.display_name, error, gatherer_id=self.id)
        self._down = error

    def refuse(self, exc: GathererRefused, table: str | None = None) -> None:
        """Stop merging this gatherer (schema refusals have no table; identity ones do)."""
        text = exc.reason
        self._rl.log(logging.ERROR, f"refused:{text}", "%s (%s) refused, not merging it: %s", self.id,
                     self.display_name, text, gatherer_id=self.id)
        if table is None:
            self._schema_refusal = text
        else:
            self._identity_refusals[table] = text

    def schema_ok(self) -> None:
        if self._schema_refusal is not None:
            log.info("%s schema is now version %s; resuming", self.id, self.schema,
                     extra={"gatherer_id": self.id})
        self._schema_refusal = None

    def identity_ok(self, table: str) -> None:
        if self._identity_refusals.pop(table, None) is not None:
            log.info("%s %s: cursor identity accepted (db_uuid %s); resuming", self.id, table, self.db_uuid,
                     extra={"gatherer_id": self.id})

    # -- connections --------------------------------------------------------------------------
    @property
    def display_name(self) -> str:
        return self.cfg.database.display_name()

    def pool_stats(self) -> PoolStats:
        """Occupancy of this gatherer's connections (``db_pool_*{database="<gatherer id>"}``)."""
        return self._slots.stats()

    def connection(self) -> Any:
        """``async with source.connection() as g``: a checked ``GathererConn``.

        Raises:
            SchemaTooOld / GathererRefused: the database fails the checks (connection closed).
            StorageError: cannot connect (mapped by shared/db.py; names the database).
        """
        return self._slots.connection()

    async def _open(self) -> GathererConn:
        conn = await connect(self.cfg.database, autocommit=True)
        try:
            version = await schema_version(conn)
            self.schema = version
            if version < self.required_version:
                raise SchemaTooOld(self.id, version, self.required_version)
            uuid = await database_uuid(conn)
            if uuid is None:
                raise GathererRefused(self.id, "gatherer_meta is missing or empty")
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, psycopg.Error):
                raise classify(exc, f"{self.id} ({self.display_name})") from None
            raise
        self.db_uuid = uuid
        return GathererConn(conn, uuid)

    async def discard_idle(self) -> None:
        await self._slots.discard_idle()

    async def close(self) -> None:
        await self._slots.close()
