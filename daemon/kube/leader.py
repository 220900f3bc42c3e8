"""Leader election over a coordination.k8s.io/v1 Lease, as client-go's leaderelection
decides it, without any I/O: the loop (daemon/sources/kube_leader.py) reads the Lease,
hands it here, and sends the write this returns.

Times are of two kinds and never mixed. Whether someone else's lease has expired is
judged on this process's monotonic clock, from when *this* replica last saw the Lease
change (as client-go's observedTime), never by comparing the other host's wall-clock
renewTime with ours: clocks of two hosts disagree, monotonic time here does not jump.
Wall-clock times only go into the Lease for people and tools reading it.

A leader stops leading renew_deadline after the last renewal it *sent* that succeeded.
Another replica sees that renewal at the earliest when the server had it, so it waits
at least lease_duration from a later instant: the old leader has stopped for
lease_duration - renew_deadline before anyone else may start.
"""

from __future__ import annotations

import datetime
import urllib.parse
from dataclasses import dataclass
from typing import Any, Literal

API_VERSION = "coordination.k8s.io/v1"
# The holder's HTTP address, for the other replicas to hand it webhooks.
ADDRESS_ANNOTATION = "remedyd.io/http"


@dataclass(frozen=True, slots=True)
class Timings:
    lease_duration: float
    renew_deadline: float
    retry_period: float


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The spec fields leader election reads and writes."""

    holder: str
    duration: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @classmethod
    def of(cls, lease: dict[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        duration = spec.get("leaseDurationSeconds")
        transitions = spec.get("leaseTransitions")
        return cls(holder=str(spec.get("holderIdentity") or ""),
                   duration=duration if isinstance(duration, int) else 0,
                   acquire_time=spec.get("acquireTime"), renew_time=spec.get("renewTime"),
                   transitions=transitions if isinstance(transitions, int) else 0)


@dataclass(frozen=True, slots=True)
class Write:
    """What to send: create the Lease, or replace it carrying the version read (a 409
    then means someone else wrote it in between)."""

    verb: Literal["create", "update"]
    body: dict[str, Any]
    acquiring: bool


def micro_time(wall: float) -> str:
    """RFC 3339 with microseconds, as metav1.MicroTime is encoded."""
    moment = datetime.datetime.fromtimestamp(wall, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Election:
    def __init__(self, identity: str, name: str, namespace: str, timings: Timings,
                 address: str | None = None) -> None:
        self.identity, self.name, self.namespace = identity, name, namespace
        self.timings = timings
        self.address = address  # written into the Lease while this replica holds it
        self._lease: dict[str, Any] | None = None
        self._record: LeaseRecord | None = None
        self._observed_at: float | None = None
        # Monotonic time the last successful renewal was sent; None: not leading.
        self._renewed_at: float | None = None

    # -- what was read ------------------------------------------------------------------

    def observe(self, lease: dict[str, Any] | None, now: float) -> None:
        """The Lease as just read (None: there is none). Its expiry clock restarts only
        when its record changed, whatever its renewTime says."""
        record = LeaseRecord.of(lease) if lease is not None else None
        if record != self._record or self._observed_at is None:
            self._observed_at = now
        self._lease, self._record = lease, record
        if record is not None and record.holder != self.identity:
            self._renewed_at = None  # someone else holds it: not ours, whatever we thought

    @property
    def holder(self) -> str:
        return self._record.holder if self._record else ""

    @property
    def holder_address(self) -> str:
        """The HTTP address the holder wrote into the Lease ("" if none, or ours)."""
        if self._lease is None or self.holder in ("", self.identity):
            return ""
        annotations = (self._lease.get("metadata") or {}).get("annotations") or {}
        address = annotations.get(ADDRESS_ANNOTATION) if isinstance(annotations, dict) else ""
        if not isinstance(address, str) or not _plain_origin(address):
            return ""
        return address.rstrip("/")

    def expired(self, now: float) -> bool:
        """The read Lease may be taken: free, released, or not seen to change for its
        duration."""
        record = self._record
        if record is None or not record.holder:
            return True
        assert self._observed_at is not None
        duration = record.duration or self.timings.lease_duration
        return now >= self._observed_at + duration

    # -- what to write ------------------------------------------------------------------

    def next_write(self, wall: float, now: float) -> Write | None:
        """The create or update to send, or None while another replica holds a valid
        lease (then only read again after retry_period)."""
        stamp = micro_time(wall)
        duration = max(1, round(self.timings.lease_duration))
        record = self._record
        if record is None or self._lease is None:
            return Write("create", self._body({}, stamp, stamp, duration, 0), acquiring=True)
        mine = record.holder == self.identity
        if not mine and not self.expired(now):
            return None
        acquire = record.acquire_time if mine and record.acquire_time else stamp
        transitions = record.transitions + (0 if mine else 1)
        return Write("update", self._body(self._lease, acquire, stamp, duration, transitions),
                     acquiring=not self.leading(now))

    def release_write(self, wall: float) -> Write | None:
        """The update that hands the Lease back on a graceful stop (client-go's
        ReleaseOnCancel): no holder, a one-second duration, so another replica takes it
        at its next try instead of after lease_duration. None unless the Lease read last
        is ours."""
        record = self._record
        if record is None or self._lease is None or record.holder != self.identity:
            return None
        stamp = micro_time(wall)
        body = self._body(self._lease, stamp, stamp, 1, record.transitions, holder="")
        return Write("update", body, acquiring=False)

    def _body(self, lease: dict[str, Any], acquire: str, renew: str, duration: int,
              transitions: int, holder: str | None = None) -> dict[str, Any]:
        holder = self.identity if holder is None else holder
        metadata = dict(lease.get("metadata") or {})
        metadata.update(name=self.name, namespace=self.namespace)
        annotations = dict(metadata.get("annotations") or {})
        # The address is the holder's: ours while we hold it, else none (not the last
        # holder's any more, nor ours once released).
        if self.address and holder == self.identity:
            annotations[ADDRESS_ANNOTATION] = self.address
        else:
            annotations.pop(ADDRESS_ANNOTATION, None)
        if annotations:
            metadata["annotations"] = annotations
        else:
            metadata.pop("annotations", None)
        spec = dict(lease.get("spec") or {})
        spec.update(holderIdentity=holder, leaseDurationSeconds=duration,
                    acquireTime=acquire, renewTime=renew, leaseTransitions=transitions)
        return {"apiVersion": API_VERSION, "kind": "Lease", "metadata": metadata,
                "spec": spec}

    # -- what came of it ----------------------------------------------------------------

    def written(self, lease: dict[str, Any], sent_at: float) -> None:
        """The write sent at `sent_at` succeeded and the server answered with `lease`."""
        self.observe(lease, sent_at)
        self._renewed_at = sent_at

    def leading(self, now: float) -> bool:
        """Holder, and renewed within renew_deadline: a leader that could not renew stops
        at the deadline, before the lease can expire for anyone else."""
        renewed = self._renewed_at
        return renewed is not None and now - renewed < self.timings.renew_deadline

    def deadline(self) -> float | None:
        """When leading ends unless renewed before (None: not leading)."""
        if self._renewed_at is None:
            return None
        return self._renewed_at + self.timings.renew_deadline

    def step_down(self) -> None:
        self._renewed_at = None


def _plain_origin(address: str) -> bool:
    """http(s)://host[:port] and nothing else: webhooks, credentials included, go there, so
    an annotation with userinfo, a path or a query (not what a replica writes) is ignored."""
    try:
        parts = urllib.parse.urlsplit(address)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        return False
    return (parts.scheme in ("http", "https") and bool(parts.hostname)
            and "@" not in parts.netloc and parts.path in ("", "/")
            and not parts.query and not parts.fragment)
