"""The leader election loop: read the Lease every retry_period, write what
daemon.kube.leader decides, and tell the rest of the daemon whether it may act.

A supervised root task like the sources (it emits no events). `acting` is read off the
monotonic clock at each call, so a leader whose renewals hang stops acting at its
renew_deadline even while a request is still out; a timer says so to the callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from daemon.clients.kubernetes import KubeClient, KubeError, KubeStatusError
from daemon.kube.leader import Election
from daemon.kube.resources import Resource
from daemon.telemetry.metrics import Metrics

log = logging.getLogger("remedyd.leader")

LEASES = Resource("leases", "coordination.k8s.io/v1", "Lease")
# A stop waits at most this long to hand the Lease back.
RELEASE_TIMEOUT = 5.0


class LeaderElector:
    name = "leader"

    def __init__(self, client: KubeClient, election: Election, metrics: Metrics,
                 request_timeout: float, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.client, self.election, self.metrics = client, election, metrics
        self._request_timeout = request_timeout
        self._clock, self._wall = clock, wall
        self._before: list[Callable[[], Awaitable[None]]] = []
        self._stopped: list[Callable[[], None]] = []
        self._acting: list[Callable[[], None]] = []
        self._prepared = False  # every before-acting hook done in this term
        self._preparing: asyncio.Task[None] | None = None
        self._term = False  # leading as far as callbacks were told
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._error: str | None = None
        metrics.leader.set(0)

    # -- what the rest of the daemon asks -------------------------------------------------

    def add_before_acting(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Awaited after each acquisition, before `acting` turns true (restore state)."""
        self._before.append(callback)

    def add_on_stopped(self, callback: Callable[[], None]) -> None:
        """Called once leadership ends (renew deadline passed, or the Lease taken)."""
        self._stopped.append(callback)

    def add_on_acting(self, callback: Callable[[], None]) -> None:
        """Called once this replica acts as leader (after the before-acting hooks)."""
        self._acting.append(callback)

    @property
    def holder(self) -> str:
        return self.election.holder

    @property
    def identity(self) -> str:
        return self.election.identity

    @property
    def holder_address(self) -> str:
        """Where the leader (another replica) takes handed-over webhooks ("": unknown)."""
        return self.election.holder_address

    @property
    def leader(self) -> bool:
        return self.election.leading(self._clock())

    @property
    def acting(self) -> bool:
        return self._prepared and self.leader

    def status(self) -> dict[str, Any]:
        # Followers are ready: they keep their caches warm to take over.
        return {"synced": True, "leader": self.acting, "identity": self.election.identity,
                "holder": self.election.holder or None, "error": self._error}

    # -- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                await self._attempt()
                await asyncio.sleep(self.election.timings.retry_period)
        finally:
            self._lost("stopped")

    async def _attempt(self) -> None:
        timings = self.election.timings
        # Never let one hung request carry a leader past its deadline unnoticed: bounded
        # by the request timeout, and by what is left of the deadline while leading.
        deadline = self.election.deadline()
        limit = self._request_timeout
        if deadline is not None:
            limit = min(limit, max(timings.retry_period, deadline - self._clock()))
        try:
            async with asyncio.timeout(limit):
                await self._try_acquire_or_renew()
            self._error = None
        except (KubeError, TimeoutError) as exc:
            self._error = str(exc) or f"no answer within {limit:g}s"
            log.warning("lease %s/%s: %s", self.election.namespace, self.election.name,
                        self._error)
        self._sync()
        if self.leader and not self._prepared and (
                self._preparing is None or self._preparing.done()):
            # Beside the loop: a slow hook (reading shared state) must not hold renewals.
            self._preparing = asyncio.create_task(self._prepare(), name="leader-prepare")

    async def _try_acquire_or_renew(self) -> None:
        election = self.election
        lease = await self.client.get(LEASES, election.namespace, election.name)
        election.observe(lease, self._clock())
        write = election.next_write(self._wall(), self._clock())
        if write is None:
            return
        sent_at = self._clock()
        try:
            if write.verb == "create":
                answer = await self.client.create(LEASES, election.namespace, write.body)
            else:
                answer = await self.client.update(LEASES, election.namespace, election.name,
                                                  write.body)
        except KubeStatusError as exc:
            if exc.code == 409:
                # Someone else wrote (or created) it since we read it: read again next round.
                log.info("lease %s/%s: written by another replica meanwhile (%s)",
                         election.namespace, election.name, exc.reason or exc.code)
                return
            raise
        election.written(answer, sent_at)
        if write.acquiring:
            log.info("lease %s/%s acquired by %s", election.namespace, election.name,
                     election.identity)

    async def release(self) -> None:
        """Hand the Lease back, once the daemon has stopped acting and drained (it runs
        from the daemon's exit stack, before the client closes). Bounded; a failure only
        means the next leader waits out lease_duration, as after a crash."""
        election = self.election
        write = election.release_write(self._wall())
        if write is None:
            return
        try:
            async with asyncio.timeout(min(self._request_timeout, RELEASE_TIMEOUT)):
                await self.client.update(LEASES, election.namespace, election.name,
                                         write.body)
        except (KubeError, TimeoutError) as exc:
            log.warning("lease %s/%s: not released (%s); another replica takes it once it "
                        "expires", election.namespace, election.name,
                        str(exc) or "no answer")
            return
        election.step_down()
        log.info("lease %s/%s released by %s", election.namespace, election.name,
                 election.identity)

    async def _prepare(self) -> None:
        for callback in self._before:
            try:
                await callback()
            except Exception:  # not acting yet: tried again after the next renewal
                log.exception("before acting: %s failed; not acting yet",
                              getattr(callback, "__qualname__", callback))
                return
            if not self.leader:
                return
        self._prepared = True
        log.info("acting as leader (%s)", self.election.identity)
        self.metrics.leader.set(1)
        for hook in self._acting:
            hook()

    def _sync(self) -> None:
        """Tell callbacks and the gauge about a term that began or ended, and arm the
        deadline timer to end it on time if no renewal comes."""
        if self.leader:
            self._term = True
            self._arm()
        else:
            self._lost("lease lost" if self.election.holder != self.election.identity
                       else "renew deadline passed")

    def _arm(self) -> None:
        deadline = self.election.deadline()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        if deadline is not None:
            delay = max(0.0, deadline - self._clock())
            self._deadline_timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        self._deadline_timer = None
        if not self.leader:
            self._lost("renew deadline passed")
        else:
            self._arm()

    def _lost(self, why: str) -> None:
        self.metrics.leader.set(0)
        self._prepared = False
        if self._preparing is not None:
            self._preparing.cancel()
            self._preparing = None
        if not self._term:
            return
        self._term = False
        self.election.step_down()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        log.warning("no longer leader (%s): %s", self.election.identity, why)
        for callback in self._stopped:
            try:
                callback()
            except Exception:
                log.exception("on stopped leading: callback failed")
