"""The Docker source against a real dockerd: transitions the stream never delivered still
reach the rules, exactly once."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from tests.conftest import ContainerFactory, docker_cli, docker_inspect
from tests.harness import DaemonProcess, SocketProxy, WebhookSink, wait_for
from tests.test_docker_e2e import (  # noqa: F401
    _unix_post,
    daemon_factory,
    flood_until_engine_skips,
    records_for,
)

# Dies six times (the restart policy brings it back each time), then stays up.
DIES_SIX_TIMES = ("sh", "-c", "n=$(ls /tmp | grep -c '^died'); [ $n -ge 6 ] && exec sleep 300; "
                  "touch /tmp/died$n; sleep 0.2; exit 3")
# Allocates until the kernel's OOM killer stops it.
EATS_MEMORY = ("sh", "-c", "a=xxxxxxxxxxxxxxxx; while :; do a=$a$a; done")


def loop_rules(name: str) -> str:
    # `doubled` fires only if one of the six deaths reached the engine twice.
    return f"""
rules:
  - name: restart-loop
    source: docker
    when: event.action == "die" && event.attributes.name == "{name}"
    occurrences: {{count: 5, within: 10m}}
    cooldown: 30m
    actions:
      - notify.webhook: {{}}
  - name: doubled
    source: docker
    when: event.action == "die" && event.attributes.name == "{name}"
    occurrences: {{count: 7, within: 10m}}
    actions:
      - notify.webhook: {{}}
"""


def oom_rules(name: str) -> str:
    return f"""
rules:
  - name: oom
    source: docker
    when: event.action == "oom" && event.attributes.name == "{name}"
    actions:
      - notify.webhook: {{}}
  - name: oom-exit
    source: docker
    when: event.action == "die" && event.attributes.name == "{name}"
    dry_run: true
    actions:
      - notify.webhook: {{}}
"""


def freeze_until_engine_skips(daemon: DaemonProcess, docker_host: str, noisy: str) -> None:
    """SIGSTOP remedyd and fill its socket, until dockerd drops events for it."""
    daemon.signal(signal.SIGSTOP)
    try:
        flood_until_engine_skips(docker_host, noisy)
    except BaseException:
        daemon.signal(signal.SIGCONT)
        raise


def roll_over_engine_buffer(docker_host: str, noisy: str) -> None:
    engine = docker_host.removeprefix("unix://")
    for _ in range(300):  # the engine keeps only its last 256 events
        assert _unix_post(engine, f"/containers/{noisy}/kill?signal=SIGWINCH") == 204


def name_of(docker_host: str, cid: str) -> str:
    return str(docker_inspect(docker_host, cid)["Name"]).lstrip("/")


def after_more_reconciles(daemon: DaemonProcess, count: int = 2) -> None:
    """Wait for `count` further periodic listings: by then a late duplicate would have shown."""
    seen = daemon.metric("remedyd_source_reconciles_total", source="docker")
    wait_for(lambda: daemon.metric("remedyd_source_reconciles_total", source="docker")
             >= seen + count, 30, f"{count} more periodic listings")


def test_restart_loop_rule_fires_once_when_the_frozen_reader_missed_every_death(
        docker_host: str, containers: ContainerFactory, daemon_factory: Any) -> None:  # noqa: F811
    noisy = containers()
    looping = containers("--restart", "always", command=DIES_SIX_TIMES, start=False)
    name = name_of(docker_host, looping)
    with WebhookSink() as sink:
        daemon = daemon_factory(loop_rules(name), docker_url=docker_host,
                                webhook_url=sink.url).start()
        freeze_until_engine_skips(daemon, docker_host, noisy)
        try:
            docker_cli(docker_host, "start", looping)
            wait_for(lambda: docker_inspect(docker_host, looping)["RestartCount"] == 6
                     and docker_inspect(docker_host, looping)["State"]["Running"], 40,
                     "six deaths while remedyd is frozen")
        finally:
            daemon.signal(signal.SIGCONT)

        wait_for(lambda: [r for r in records_for(daemon, looping, "decision")
                          if r["rule"] == "restart-loop"], 30, "the restart-loop rule to fire")
        after_more_reconciles(daemon)
        decisions = records_for(daemon, looping, "decision")
        assert [d["rule"] for d in decisions] == ["restart-loop"]
        assert len(sink.bodies) == 1
        assert daemon.metric("remedyd_source_gaps_total", source="docker") >= 1
        assert daemon.metric("remedyd_source_recovered_events_total", source="docker",
                             via="replay") >= 5
        assert daemon.metric("remedyd_source_reconnects_total", source="docker") == 0


def test_restart_loop_rule_fires_once_from_state_when_the_engine_forgot_the_deaths(
        docker_host: str, containers: ContainerFactory, daemon_factory: Any,  # noqa: F811
        tmp_path: Path) -> None:
    noisy = containers()
    looping = containers("--restart", "always", command=DIES_SIX_TIMES, start=False)
    name = name_of(docker_host, looping)
    with WebhookSink() as sink, SocketProxy(docker_host, tmp_path / "docker.sock") as proxy:
        daemon = daemon_factory(loop_rules(name), docker_url=proxy.url,
                                webhook_url=sink.url).start()
        docker_cli(docker_host, "start", looping)
        wait_for(lambda: docker_inspect(docker_host, looping)["RestartCount"] >= 1, 20,
                 "remedyd to see the first deaths")
        proxy.cut()
        wait_for(lambda: docker_inspect(docker_host, looping)["RestartCount"] == 6
                 and docker_inspect(docker_host, looping)["State"]["Running"], 40,
                 "the remaining deaths during the outage")
        roll_over_engine_buffer(docker_host, noisy)
        proxy.resume()

        wait_for(lambda: len(sink.bodies) == 1, 30, "the restart-loop rule to fire")
        after_more_reconciles(daemon)
        decisions = records_for(daemon, looping, "decision")
        assert [d["rule"] for d in decisions] == ["restart-loop"]
        assert daemon.metric("remedyd_source_gaps_total", source="docker", reason="state") >= 1
        assert daemon.metric("remedyd_source_recovered_events_total", source="docker",
                             via="state") >= 1


def kill_for_memory(docker_host: str, cid: str, tries: int = 3) -> None:
    """Start `cid` until the kernel kills it for memory. Now and then the shell exits on a
    failed allocation first (no OOM kill, nothing to test): that run is started again."""
    state: dict[str, Any] = {}
    for _ in range(tries):
        docker_cli(docker_host, "start", cid)
        state = wait_for(lambda: (st := docker_inspect(docker_host, cid)["State"])
                         and (st["OOMKilled"] or not st["Running"]) and st, 20,
                         "the memory-hungry container to stop")
        if state["OOMKilled"]:
            return
    raise AssertionError(f"the kernel never killed {cid[:12]} for memory: {state}")


def oom_during_outage(make_daemon: Any, docker_host: str, containers: ContainerFactory,
                      sink: WebhookSink, proxy: SocketProxy,
                      roll_over: bool) -> tuple[DaemonProcess, str]:
    """A container killed for memory while remedyd is cut off from the engine; with
    `roll_over`, the engine has forgotten its events by the time remedyd is back."""
    noisy = containers()
    hungry = containers("--memory", "8m", "--memory-swap", "8m", command=EATS_MEMORY,
                        start=False)
    daemon = make_daemon(oom_rules(name_of(docker_host, hungry)), docker_url=proxy.url,
                         webhook_url=sink.url).start()
    proxy.cut()
    wait_for(lambda: not daemon.ready(), 20, "remedyd to notice the dropped connection")
    kill_for_memory(docker_host, hungry)
    if roll_over:
        roll_over_engine_buffer(docker_host, noisy)
    proxy.resume()
    wait_for(lambda: sink.bodies, 30, "the OOM rule to fire")
    after_more_reconciles(daemon)
    return daemon, hungry


def test_an_oom_the_engine_forgot_becomes_one_synthetic_oom_event(
        docker_host: str, containers: ContainerFactory, daemon_factory: Any,  # noqa: F811
        tmp_path: Path) -> None:
    with WebhookSink() as sink, SocketProxy(docker_host, tmp_path / "docker.sock") as proxy:
        daemon, hungry = oom_during_outage(daemon_factory, docker_host, containers, sink, proxy,
                                           roll_over=True)
        ooms = [d for d in records_for(daemon, hungry, "decision") if d["rule"] == "oom"]
        assert len(ooms) == 1 and len(sink.bodies) == 1
        assert ooms[0]["event"]["synthetic"] is True
        [exit_] = [d for d in records_for(daemon, hungry, "decision") if d["rule"] == "oom-exit"]
        # Docker's own attributes stay the strings Docker sends; the count is a number.
        assert exit_["event"]["attributes"]["exitCode"] == "137"
        assert exit_["event"]["attributes"]["restartCount"] == 0
        assert daemon.metric("remedyd_source_gaps_total", source="docker") >= 1


def test_an_oom_replayed_after_a_disconnect_is_emitted_once_and_not_made_up_again(
        docker_host: str, containers: ContainerFactory, daemon_factory: Any,  # noqa: F811
        tmp_path: Path) -> None:
    with WebhookSink() as sink, SocketProxy(docker_host, tmp_path / "docker.sock") as proxy:
        daemon, hungry = oom_during_outage(daemon_factory, docker_host, containers, sink, proxy,
                                           roll_over=False)
        decisions = records_for(daemon, hungry, "decision")
        assert [d for d in decisions if d["rule"] == "oom"]
        assert all(d["event"]["synthetic"] is False for d in decisions)
        assert len([d for d in decisions if d["rule"] == "oom-exit"]) == 1
