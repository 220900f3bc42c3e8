"""A persisted outbox for notifications: written (fsync'd) before the first send, marked
done once delivered, retried with bounded exponential backoff, also after a restart.

One file per notification in a directory beside the audit log, named after its
idempotency key (incident, rule, rung, action index, firing/resolved), so a key is
sent at most once while its file says "done"; a crash between a send and its mark can
only send it again, which is why the key travels with the notification (the webhook's
`Idempotency-Key`). The executor makes the first attempts of a decision through
`send`; once it gives up on a temporary failure the entry stays pending and `run`
takes over. Delivered and dropped entries are audited when the outbox (not the
executor, whose outcome record already says it) settled them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daemon.audit.log import AuditLog, AuditUnavailable
from daemon.core.errors import PermanentError, TemporaryError

log = logging.getLogger("remedyd.outbox")

# Sends one stored payload with its key; raises TemporaryError or PermanentError.
Deliver = Callable[[Mapping[str, Any], str], Awaitable[dict[str, Any]]]
# Settled entries are kept this long (so a late retry of the same key is recognised).
DONE_KEPT = 7 * 86400.0
# The loop looks at the directory at least this often (entries written by `send` wake it).
IDLE_WAKE = 60.0


@dataclass(frozen=True, slots=True)
class OutboxPolicy:
    backoff: float = 30.0
    backoff_max: float = 3600.0
    # An entry not delivered within this long after it was written is dropped (audited).
    max_age: float = 86400.0
    timeout: float = 60.0


def idempotency_key(incident: str, rule: str, step: int, index: int | str, phase: str) -> str:
    return f"{incident}/{rule}/{step}/{index}/{phase}"


class Outbox:
    def __init__(self, directory: Path, audit: AuditLog | None, policy: OutboxPolicy,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.dir = directory
        self.audit = audit
        self.policy = policy
        self.clock = wall_clock
        self.name = "outbox"
        self._deliverers: dict[str, Deliver] = {}
        # Keys being sent right now (by `send` or the loop): never two sends of one key.
        self._busy: set[str] = set()
        self._wake = asyncio.Event()
        self._resent_on_start = False
        # Pending entries by key: read from the directory once, then kept up to date, so
        # a round does not read every settled file the directory keeps.
        self._pending: dict[str, dict[str, Any]] | None = None

    def register(self, action: str, deliver: Deliver) -> None:
        self._deliverers[action] = deliver

    def kick(self) -> None:
        """An entry was put that is due now: the loop looks at once."""
        self._wake.set()

    # -- files --------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.dir / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")

    def load(self, key: str) -> dict[str, Any] | None:
        try:
            entry: dict[str, Any] = json.loads(self._path(key).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("outbox entry for %s unreadable: %s", key, exc)
            return None
        return entry

    def _write(self, entry: Mapping[str, Any]) -> None:
        """Atomically, durably: a half-written entry would be a lost notification."""
        if self._pending is not None:
            if entry.get("state") == "pending":
                self._pending[str(entry["key"])] = dict(entry)
            else:
                self._pending.pop(str(entry["key"]), None)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self._path(str(entry["key"]))
        tmp = path.with_suffix(".tmp")
        # 0600: a notification's URL may carry its receiver's credentials.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(entry, sort_keys=True).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def entries(self) -> list[dict[str, Any]]:
        if not self.dir.is_dir():
            return []
        found = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                found.append(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                log.error("outbox entry %s unreadable, skipped: %s", path.name, exc)
        return found

    def scan(self) -> dict[str, dict[str, Any]]:
        """Read the directory: the pending entries; settled ones past DONE_KEPT go."""
        now, pending = self.clock(), {}
        for entry in self.entries():
            key = str(entry.get("key"))
            if entry.get("state") == "pending":
                pending[key] = entry
            elif now - float(entry.get("settled", now)) > DONE_KEPT:
                self._path(key).unlink(missing_ok=True)
        self._pending = pending
        return pending

    def _index(self) -> dict[str, dict[str, Any]]:
        return self.scan() if self._pending is None else self._pending

    def pending(self) -> list[dict[str, Any]]:
        return list(self._index().values())

    def put(self, key: str, action: str, payload: Mapping[str, Any],
            about: Mapping[str, Any]) -> dict[str, Any]:
        """The entry of `key`, written now unless it exists (a retry, or a send that a
        restart interrupted)."""
        entry = self.load(key)
        if entry is None:
            entry = {"key": key, "action": action, "payload": dict(payload),
                     "about": dict(about), "state": "pending", "attempts": 0,
                     "created": self.clock(), "next_at": self.clock()}
            self._index()
            self._write(entry)
        return entry

    def update(self, key: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Change a stored entry in place (a firing alert that resolved before delivery)."""
        entry = self._index().get(key)
        if entry is not None:
            change(entry)
            self._write(entry)

    # -- sending ------------------------------------------------------------------------------

    async def send(self, key: str, action: str, payload: Mapping[str, Any],
                   about: Mapping[str, Any]) -> dict[str, Any]:
        """One attempt of the executor's: persisted first, then sent, then marked done.

        A key already delivered is not sent again; a temporary failure leaves it pending
        for the loop (with its backoff) once the executor stops asking.
        """
        entry = self.put(key, action, payload, about)
        if entry["state"] == "done":
            return {"idempotency_key": key, "already_delivered": True}
        if entry["state"] == "dropped":
            raise PermanentError(f"notification {key} was dropped: {entry.get('error')}")
        if key in self._busy:
            raise TemporaryError(f"notification {key} is being sent right now")
        try:
            return await self._attempt(entry)
        finally:
            self._wake.set()  # its next attempt may be due before the loop's next look

    async def _attempt(self, entry: dict[str, Any]) -> dict[str, Any]:
        key = str(entry["key"])
        deliver = self._deliverers.get(str(entry["action"]))
        if deliver is None:
            raise PermanentError(f"no deliverer for {entry['action']} (integration off?)")
        self._busy.add(key)
        try:
            entry["attempts"] = int(entry.get("attempts", 0)) + 1
            try:
                async with asyncio.timeout(self.policy.timeout):
                    details = await deliver(entry["payload"], key)
            except TimeoutError as exc:
                raise TemporaryError(f"no answer within {self.policy.timeout:g}s") from exc
        except TemporaryError as exc:
            delay = min(self.policy.backoff * 2 ** (entry["attempts"] - 1),
                        self.policy.backoff_max)
            entry.update(next_at=self.clock() + max(delay, exc.delay), error=str(exc))
            self._write(entry)
            raise
        except PermanentError as exc:
            entry.update(state="dropped", error=str(exc), settled=self.clock())
            self._write(entry)
            raise
        except asyncio.CancelledError:
            # The executor's timeout or a shutdown: the send may still be under way (an
            # Apprise thread cannot be stopped), so the loop waits a backoff before its turn.
            entry.update(next_at=self.clock() + self.policy.backoff, error="interrupted")
            self._write(entry)
            raise
        finally:
            self._busy.discard(key)
        entry.update(state="done", settled=self.clock())
        entry.pop("error", None)
        self._write(entry)
        return {"idempotency_key": key, **details}

    # -- the loop -----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Readiness: the outbox never holds the daemon back; it says what waits."""
        return {"synced": True, "pending": len(self._index())}

    async def run(self) -> None:
        """Resend what a previous run left pending (at once), then each entry when due."""
        while True:
            try:
                wait = await self.round(resend_all=not self._resent_on_start)
            except OSError as exc:  # a full or unwritable disk: look again later
                log.error("outbox %s: %s", self.dir, exc)
                wait = IDLE_WAKE
            self._resent_on_start = True
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for returns normally when the
            # wake-up and a cancel land in one turn, the cancel is lost, and a shutdown
            # waited out the next idle sleep.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.05, min(wait, IDLE_WAKE))):
                    await self._wake.wait()

    async def round(self, resend_all: bool = False) -> float:
        """Send every due pending entry once; drop the expired; return the seconds until
        the next is due."""
        now = self.clock()
        soonest = IDLE_WAKE
        for entry in list((self.scan() if resend_all else self._index()).values()):
            key = str(entry.get("key"))
            if key in self._busy:
                continue
            if now - float(entry.get("created", now)) > self.policy.max_age:
                entry.update(state="dropped", settled=now)
                self._write(entry)
                self._audit(entry, "dropped", f"not delivered within "
                            f"{self.policy.max_age:g}s: {entry.get('error', '')}")
                continue
            due = float(entry.get("next_at", now))
            if not resend_all and due > now:
                soonest = min(soonest, due - now)
                continue
            try:
                details = await self._attempt(entry)
            except TemporaryError as exc:
                log.info("outbox: %s not delivered (attempt %d): %s", key,
                         entry["attempts"], exc)
                soonest = min(soonest, float(entry["next_at"]) - self.clock())
            except PermanentError as exc:
                self._audit(entry, "dropped", str(exc))
            else:
                self._audit(entry, "delivered", None, details)
        return soonest

    def _audit(self, entry: Mapping[str, Any], outcome: str, error: str | None,
               details: Mapping[str, Any] | None = None) -> None:
        level = logging.INFO if outcome == "delivered" else logging.ERROR
        log.log(level, "outbox: %s %s after %s attempt(s)%s", entry["key"], outcome,
                entry.get("attempts"), f": {error}" if error else "")
        if self.audit is None:
            return
        record: dict[str, Any] = {**entry.get("about", {}), "idempotency_key": entry["key"],
                                  "action": entry["action"], "outcome": outcome,
                                  "attempts": entry.get("attempts")}
        if error:
            record["error"] = error
        if details:
            record["details"] = dict(details)
        try:
            self.audit.append("notification", record)
        except (AuditUnavailable, RuntimeError) as exc:
            log.error("could not audit notification %s: %s", entry["key"], exc)
