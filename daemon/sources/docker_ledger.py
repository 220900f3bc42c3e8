"""Which container transitions (start, die, oom) have been emitted, so none is lost or doubled.

dockerd drops events for a listener that lags and forgets all but its last 256, but
`docker inspect` keeps the evidence: RestartCount, State.FinishedAt / StartedAt and
State.OOMKilled. Comparing them with the events that arrived tells how many deaths were
missed. A transition made up from that state leaves a *cover*: a window of engine time in
which the real event, should it turn up late (replay, a lagging stream), is recognised as
the same transition and dropped.

The windows follow from how dockerd orders a container's life: a `start` event is logged
after State.StartedAt; a `die` after State.FinishedAt and before the next start; an `oom`
after the previous exit and before the next start. StartedAt can be later than
FinishedAt (a process that exits at once): only State.Running says a start followed.

Pure and synchronous: all times are nanoseconds on the engine's clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Enough to tell a restart loop; older covers belong to transitions long settled.
_COVERS_KEPT = 16
_UNLIMITED = -1  # under cgroup v1 one OOM kill is reported many times


@dataclass(frozen=True, slots=True)
class ContainerState:
    """What `docker inspect` says about a container's last start and exit."""

    created_ns: int
    started_ns: int  # 0: never started
    finished_ns: int  # 0: never exited
    restart_count: int
    running: bool
    restarting: bool
    oom_killed: bool
    exit_code: int


@dataclass(frozen=True, slots=True)
class Missed:
    """A transition the events never reported. `at_ns` is exact for the latest of each
    kind and the time of the exit that revealed it for older deaths."""

    action: str
    at_ns: int
    exit_code: int | None = None


@dataclass(slots=True)
class _Cover:
    action: str
    lo: int
    hi: int | None  # None: until the container's next start
    credits: int
    # True: the real event is still news (we never emitted it) but not a new transition.
    emit: bool = False

    def takes(self, action: str, at_ns: int) -> bool:
        return (self.action == action and self.credits != 0 and self.lo <= at_ns
                and (self.hi is None or at_ns < self.hi))


@dataclass(slots=True)
class _Track:
    restart_count: int = 0
    exit_ns: int = 0  # the latest exit accounted for
    start_ns: int = 0  # the latest start accounted for
    anchor_ns: int = 0  # a real death after this is a new exit
    listed: bool = False
    real: list[tuple[str, int]] = field(default_factory=list)  # real events since listed
    covers: list[_Cover] = field(default_factory=list)


class Ledger:
    def __init__(self) -> None:
        self._tracks: dict[str, _Track] = {}
        self.watching_since_ns = 0  # containers created before this have history we never saw

    def accept(self, cid: str, action: str, at_ns: int) -> bool:
        """A real event arrived: False when a made-up transition already stood for it."""
        track = self._tracks.setdefault(cid, _Track())
        for cover in track.covers:
            if cover.takes(action, at_ns):
                if cover.credits != _UNLIMITED:
                    cover.credits -= 1
                return cover.emit
        if action == "start":
            _close_windows(track, at_ns)
        track.real.append((action, at_ns))
        del track.real[:-64]
        return True

    def forget(self, cid: str) -> None:
        self._tracks.pop(cid, None)

    def compare(self, cid: str, state: ContainerState, settled_ns: int) -> list[Missed]:
        """What the events missed of this container's transitions up to `settled_ns`.

        A transition newer than `settled_ns` may still arrive as an event (or in the
        next replay): it is compared next time, not made up now.
        """
        track = self._tracks.get(cid)
        if track is None or not track.listed:
            track = self._first_sight(cid, state, track)
            if track is None:
                return []
        if max(state.started_ns, state.finished_ns) > settled_ns:
            return []
        missed = self._exits(track, state) + self._start(track, state)
        track.restart_count = state.restart_count
        track.exit_ns = max(track.exit_ns, state.finished_ns)
        track.start_ns = max(track.start_ns, state.started_ns)
        track.real = [(a, t) for a, t in track.real if t > track.anchor_ns]
        del track.covers[:-_COVERS_KEPT]
        return sorted(missed, key=lambda m: m.at_ns)

    def _first_sight(self, cid: str, state: ContainerState,
                     track: _Track | None) -> _Track | None:
        track = track or _Track()
        self._tracks[cid] = track
        track.listed = True
        if state.created_ns >= self.watching_since_ns > 0:
            return track  # born while we watched: every transition should have reached us
        # Older history is not ours to replay. What arrived before this listing is part
        # of it; so is a late `die` for the last exit: real news, but not a new exit.
        f, s = state.finished_ns, state.started_ns
        track.restart_count, track.exit_ns, track.start_ns = state.restart_count, f, s
        track.anchor_ns = max([f, s, *(t for _, t in track.real)])
        if f and not state.running and not any(a == "die" and t >= f for a, t in track.real):
            track.covers.append(_Cover("die", f, None, 1, emit=True))
        track.real.clear()
        return None

    def _exits(self, track: _Track, state: ContainerState) -> list[Missed]:
        f, s = state.finished_ns, state.started_ns
        if f <= track.exit_ns:
            return []
        # Only a running container has started since its last exit: a process that exits
        # at once is stamped finished before it is stamped started.
        next_start = s if state.running and s > f else None
        if next_start is not None:
            _close_windows(track, next_start)
        # Deaths after the next start belong to exits this state does not show yet.
        real_dies = [t for a, t in track.real if a == "die" and t > track.anchor_ns
                     and (next_start is None or t < next_start)]
        latest = [t for t in real_dies if t >= f and (next_start is None or t < next_start)]
        restarted = state.restarting or state.running
        if state.restart_count >= track.restart_count:
            observed = state.restart_count - track.restart_count + (0 if restarted else 1)
        else:  # a manual start reset the count: at least the deaths since then
            observed = state.restart_count + 1
        observed = max(observed, 1)  # FinishedAt moved: at least one exit
        count = max(observed - len(real_dies), 0 if latest else 1)
        earlier = count - (0 if latest else 1)
        # In the order they happened: older deaths, then the OOM kill that ended the run,
        # then the exit it caused.
        missed = [Missed("die", f) for _ in range(earlier)]
        if earlier:
            track.covers.append(_Cover("die", track.anchor_ns + 1, f, earlier))
        if state.oom_killed:
            # From the previous exit, not StartedAt: a process can be killed for memory
            # before the engine stamps it started.
            run_lo = track.anchor_ns + 1
            if not any(a == "oom" and run_lo <= t and (next_start is None or t < next_start)
                       for a, t in track.real):
                missed.append(Missed("oom", f))
                track.covers.append(_Cover("oom", run_lo, next_start, _UNLIMITED))
        if not latest and count:
            missed.append(Missed("die", f, state.exit_code))
            track.covers.append(_Cover("die", f, next_start, 1))
        track.anchor_ns = latest[0] if latest else f
        return missed

    def _start(self, track: _Track, state: ContainerState) -> list[Missed]:
        s = state.started_ns
        if s <= track.start_ns:
            return []
        # Not bounded by FinishedAt: a process that exits at once can be stamped finished
        # before its start event is logged. Any start event since StartedAt is this one.
        if any(a == "start" and t >= s for a, t in track.real):
            return []
        track.covers.append(_Cover("start", s, None, 1))
        return [Missed("start", s)]


def _close_windows(track: _Track, started_ns: int) -> None:
    """A start ends every open window that began before it: a later death is a new exit."""
    for cover in track.covers:
        if cover.hi is None and started_ns > cover.lo:
            cover.hi = started_ns
