"""The Docker security checks (the Docker section of rules/security.yaml) on real
`docker inspect` output: each check has a fixture it passes and one it fails, and a
hardened container has no finding at all.

The fixtures in tests/fixtures/security/docker/ were captured from containers started
on the private dockerd (scripts/stack/dockerd-up) with the arguments in CAPTURED:
`python -m tests.test_security_checks_docker` captures them again. Most are the hardened
container with one thing changed, so each fails exactly the check it is about. Two are
captures edited where the sandbox cannot run the real thing (EDITED): `--privileged`
does not start here, and an image reference with a digest needs a registry.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from daemon.core.events import JSONValue
from daemon.engine.ruleset import RuleSet, load_ruleset
from daemon.security.events import posture_event
from daemon.security.findings import evaluate
from daemon.security.params import apply_params
from daemon.security.view_docker import docker_view
from daemon.settings import SecurityParam
from tests.conftest import TEST_LABEL, docker_cli
from tests.rulekit import CATALOG

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "security" / "docker"
PACK = ROOT / "rules" / "security.yaml"
SOCKET = "/tmp/remedyd-stack/docker/docker.sock"
PINNED = "remedyd-test/busybox:1.36.1"  # a fixed tag of the test image
ELSEWHERE = "localhost:5000/team/busybox:1.36.1"  # the same image, named for a registry

# The hardened container, option by option, so a variant can leave one out.
HARDENED: dict[str, tuple[str, ...]] = {
    "user": ("--user", "1000:1000"),
    "read-only": ("--read-only", "--tmpfs", "/tmp"),
    "memory": ("--memory", "64m"),
    "pids": ("--pids-limit", "64"),
    "cpus": ("--cpus", "0.5"),
    "health": ("--health-cmd", "true", "--health-interval", "30s"),
    "nnp": ("--security-opt", "no-new-privileges"),
    "caps": ("--cap-drop", "ALL"),
    "network": ("--network", "none"),
    "ports": ("-p", "127.0.0.1:8080:80"),
    "restart": ("--restart", "on-failure:5"),
    "timezone": ("-v", "/etc/localtime:/etc/localtime:ro"),
    "compose": ("--label", "com.docker.compose.project=lakehouse",
                "--label", "com.docker.compose.service=api",
                "--label", "com.docker.compose.config-hash=5f1e2d"),
}


@dataclass(frozen=True)
class Variant:
    """A container: the hardened one without `drop`, with `add`, running `image`; the
    check ids it must fail, and nothing else."""

    expect: frozenset[str]
    drop: tuple[str, ...] = ()
    add: tuple[str, ...] = ()
    image: str = PINNED
    hardened: bool = True

    def args(self) -> list[str]:
        base = [a for key, opts in HARDENED.items() if key not in self.drop for a in opts]
        return [*(base if self.hardened else []), *self.add]


def _ids(*ids: str) -> frozenset[str]:
    return frozenset(ids)


CAPTURED: dict[str, Variant] = {
    "hardened": Variant(_ids()),
    "cap-add-sys-admin": Variant(_ids("CIS-DOCKER-5-3"), add=("--cap-add", "SYS_ADMIN")),
    "cap-add-net-bind-service": Variant(_ids(), add=("--cap-add", "NET_BIND_SERVICE")),
    "docker-socket": Variant(_ids("CIS-DOCKER-5-31"),
                             add=("-v", f"{SOCKET}:/var/run/docker.sock")),
    "host-network": Variant(_ids("CIS-DOCKER-5-9"), drop=("network", "ports"),
                            add=("--network", "host")),
    "host-pid": Variant(_ids("CIS-DOCKER-5-15"), add=("--pid", "host")),
    "host-ipc": Variant(_ids("CIS-DOCKER-5-16"), add=("--ipc", "host")),
    "host-uts": Variant(_ids("CIS-DOCKER-5-20"), add=("--uts", "host")),
    "host-userns": Variant(_ids("CIS-DOCKER-5-30"), add=("--userns", "host")),
    "etc-mounted": Variant(_ids("CIS-DOCKER-5-5"), add=("-v", "/etc:/host/etc:ro")),
    "seccomp-unconfined": Variant(_ids("CIS-DOCKER-5-21"),
                                  add=("--security-opt", "seccomp=unconfined")),
    "apparmor-unconfined": Variant(_ids("CIS-DOCKER-5-1"),
                                   add=("--security-opt", "apparmor=unconfined")),
    "no-new-privileges-unset": Variant(_ids("CIS-DOCKER-5-25"), drop=("nnp",)),
    "root-no-health-check": Variant(_ids("CIS-DOCKER-4-1", "CIS-DOCKER-5-26"),
                                    drop=("user", "health")),
    "user-root-by-name": Variant(_ids("CIS-DOCKER-4-1"), drop=("user",),
                                 add=("--user", "root:root")),
    "no-memory-limit": Variant(_ids("CIS-DOCKER-5-10"), drop=("memory",)),
    "no-pids-limit": Variant(_ids("CIS-DOCKER-5-28"), drop=("pids",)),
    "writable-rootfs": Variant(_ids("CIS-DOCKER-5-12"), drop=("read-only",)),
    "ports-all-interfaces": Variant(_ids("CIS-DOCKER-5-13"), drop=("ports",),
                                    add=("-p", "8080:80", "-p", "0.0.0.0:8443:443")),
    "image-latest": Variant(_ids("DOCKER-IMG-LATEST"), image="remedyd-test/busybox:latest"),
    "image-untagged": Variant(_ids("DOCKER-IMG-LATEST"), image="remedyd-test/busybox"),
    "image-other-registry": Variant(_ids(), image=ELSEWHERE),
    # `docker run IMAGE`, nothing else: what an ordinary container fails.
    "defaults": Variant(_ids("CIS-DOCKER-4-1", "CIS-DOCKER-5-10", "CIS-DOCKER-5-12",
                             "CIS-DOCKER-5-25", "CIS-DOCKER-5-26", "CIS-DOCKER-5-28",
                             "DOCKER-IMG-LATEST"),
                        image="remedyd-test/busybox:latest", hardened=False,
                        add=("--network", "none")),
}


@dataclass(frozen=True)
class Edit:
    """A capture changed where the sandbox cannot run the real thing."""

    expect: frozenset[str]
    base: str
    changes: Mapping[str, Any] = field(default_factory=dict)  # "HostConfig.Privileged": True


EDITED: dict[str, Edit] = {
    "privileged": Edit(_ids("CIS-DOCKER-5-4"), "hardened", {"HostConfig.Privileged": True}),
    # The digest is the image's own id: what a registry would have given it.
    "image-digest": Edit(_ids(), "hardened", {"Config.Image": "{Config.Image}@{Image}"}),
}

ALL_IDS = frozenset(i for v in [*CAPTURED.values(), *EDITED.values()] for i in v.expect)


def pack(overrides: Mapping[str, SecurityParam] | None = None) -> RuleSet:
    loaded, errors = load_ruleset([PACK], CATALOG)
    assert not errors, errors
    if overrides:
        loaded, errors = apply_params(loaded, overrides)
        assert not errors, errors
    return loaded


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


def found(inspect: Mapping[str, Any], ruleset: RuleSet | None = None) -> set[str]:
    event = posture_event("docker", inspect, origin="list")
    return {f.check for f in evaluate(ruleset or pack(), [event])}


# -- every check fails its fixture and passes the others -----------------------------

@pytest.mark.parametrize("name", [*CAPTURED, *EDITED])
def test_each_fixture_fails_exactly_its_checks(name: str) -> None:
    variant = CAPTURED.get(name) or EDITED[name]
    assert found(fixture(name)) == variant.expect


def test_every_check_of_the_pack_is_failed_by_a_fixture_and_passed_by_the_hardened_one() -> None:
    ids = {r.rule.security.id for r in pack().rules
           if r.rule.security is not None and r.rule.match.kind == "container"}
    # The image provenance checks are off by default: their fixtures set params below.
    assert ids - ALL_IDS == {"DOCKER-IMG-REGISTRY", "DOCKER-IMG-DIGEST"}
    assert found(fixture("hardened")) == set()


def test_the_hardened_container_has_no_finding_under_a_strict_policy() -> None:
    # The strictest settings the pack has: the default registry only, digests required.
    strict = pack({"allowed_registries": [""], "require_digest": True})
    assert found(fixture("image-digest"), strict) == set()
    assert found(fixture("hardened"), strict) == {"DOCKER-IMG-DIGEST"}


def test_the_other_bundled_packs_add_no_finding_about_a_containers_configuration() -> None:
    """Every bundled rule file loaded together (as the daemon loads rules/): no other pack
    checks a container's configuration (only its drift, which these events have none
    of), so no finding is reported twice under two ids."""
    everything, errors = load_ruleset([ROOT / "rules"], CATALOG)
    assert not errors, errors
    for name in ("hardened", "defaults", "docker-socket", "image-latest"):
        assert found(fixture(name), everything) == found(fixture(name)), name


def test_registry_allow_list() -> None:
    other, default = fixture("image-other-registry"), fixture("hardened")
    assert found(other, pack({"allowed_registries": [""]})) == {"DOCKER-IMG-REGISTRY"}
    assert found(default, pack({"allowed_registries": [""]})) == set()
    assert found(other, pack({"allowed_registries": ["localhost:5000"]})) == set()
    assert found(default, pack({"allowed_registries": ["localhost:5000"]})) == {
        "DOCKER-IMG-REGISTRY"}
    # A path prefix allows that path only, and a longer host is another host.
    assert found(other, pack({"allowed_registries": ["localhost:5000/team"]})) == set()
    assert found(other, pack({"allowed_registries": ["localhost:5000/tea"]})) == {
        "DOCKER-IMG-REGISTRY"}
    assert found(other, pack({"allowed_registries": ["localhost:500"]})) == {
        "DOCKER-IMG-REGISTRY"}


def test_allow_lists_are_params() -> None:
    assert found(fixture("cap-add-net-bind-service"),
                 pack({"allowed_capabilities": []})) == {"CIS-DOCKER-5-3"}
    assert found(fixture("etc-mounted"),
                 pack({"allowed_host_paths": ["/etc"]})) == {"CIS-DOCKER-5-5"}  # and localtime
    assert found(fixture("etc-mounted"),
                 pack({"allowed_host_paths": ["/etc", "/etc/localtime"]})) == set()
    assert found(fixture("hardened"), pack({"allowed_host_paths": []})) == {"CIS-DOCKER-5-5"}


def test_a_waived_check_is_no_finding() -> None:
    inspect = fixture("docker-socket")
    event = posture_event("docker", inspect, origin="list", waived=["CIS-DOCKER-5-31"])
    assert evaluate(pack(), [event]) == []


def test_findings_name_the_container_and_carry_the_check() -> None:
    [finding] = evaluate(pack(), [posture_event("docker", fixture("docker-socket"),
                                                origin="list")])
    assert (finding.subject.source, finding.subject.kind) == ("docker", "container")
    assert finding.subject.name == "sec-docker-socket"
    assert (finding.severity, finding.control) == ("critical", "CIS Docker Benchmark v1.6.0 5.31")
    assert finding.platform == "docker" and finding.remediation


# -- the view -------------------------------------------------------------------------

def test_the_view_of_the_hardened_container() -> None:
    view = docker_view(fixture("hardened"))
    assert view["user"] == "1000:1000" and view["root"] is False
    assert view["capDrop"] == ["ALL"] and view["capAdd"] == []
    assert view["noNewPrivileges"] is True and view["seccomp"] == "default"
    assert view["memoryLimit"] == 64 * 2**20 and view["pidsLimit"] == 64
    assert view["cpus"] == 0.5 and view["readOnlyRootfs"] is True
    assert view["healthcheck"] is True and view["publishedAllInterfaces"] == []
    assert view["restartPolicy"] == "on-failure" and view["restartMaxRetries"] == 5
    assert view["sensitiveMounts"] == ["/etc/localtime"]
    assert view["mounts"] == [{"type": "bind", "source": "/etc/localtime",
                               "destination": "/etc/localtime", "rw": False}]
    assert (view["composeProject"], view["composeService"]) == ("lakehouse", "api")
    labels = view["labels"]
    assert isinstance(labels, dict) and "com.docker.compose.config-hash" not in labels
    assert view["image"] == {"reference": PINNED, "registry": "", "repository":
                             "remedyd-test/busybox", "tag": "1.36.1", "digest": "",
                             "latest": False, "pinned": False}
    assert view["images"] == [{**view["image"], "container": "sec-hardened"}]


def test_the_view_of_the_failing_fixtures() -> None:
    assert docker_view(fixture("cap-add-sys-admin"))["capAdd"] == ["SYS_ADMIN"]
    assert docker_view(fixture("docker-socket"))["dockerSocket"] is True
    assert docker_view(fixture("ports-all-interfaces"))["publishedAllInterfaces"] == [
        "443/tcp", "80/tcp"]
    assert docker_view(fixture("seccomp-unconfined"))["seccomp"] == "unconfined"
    assert docker_view(fixture("apparmor-unconfined"))["appArmor"] == "unconfined"
    defaults = docker_view(fixture("defaults"))
    assert defaults["root"] is True and defaults["user"] == ""
    assert defaults["memoryLimit"] == 0 and defaults["pidsLimit"] == 0
    assert defaults["healthcheck"] is False and defaults["noNewPrivileges"] is False
    assert defaults["restartPolicy"] == "no" and defaults["composeProject"] == ""


def test_the_view_has_every_key_whatever_the_inspect_lacks() -> None:
    assert docker_view({}).keys() == docker_view(fixture("hardened")).keys()
    assert found({}) == {"CIS-DOCKER-4-1", "CIS-DOCKER-5-10", "CIS-DOCKER-5-12",
                         "CIS-DOCKER-5-25", "CIS-DOCKER-5-26", "CIS-DOCKER-5-28",
                         "DOCKER-IMG-LATEST"}


def test_the_view_is_the_same_for_a_recreated_container() -> None:
    """The baseline diffs the view: a container recreated with the same configuration
    (new id, new start time, new anonymous volume, another host port) has not drifted."""
    inspect = fixture("hardened")
    again = json.loads(json.dumps(inspect))
    again["Id"], again["Created"] = "f" * 64, "2030-01-01T00:00:00Z"
    again["State"] = {"Status": "running", "StartedAt": "2030-01-01T00:00:01Z", "Pid": 4242}
    again["Config"]["Labels"]["com.docker.compose.config-hash"] = "0a0b0c"
    again["NetworkSettings"]["Ports"] = {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}]}
    assert docker_view(again) == docker_view(inspect)
    for mounts in (inspect, again):
        mounts["Mounts"] = [*mounts["Mounts"], {
            "Type": "volume", "Name": os.urandom(32).hex(), "Source": "/x", "Destination": "/data",
            "Driver": "local", "RW": True}]
    assert docker_view(again) == docker_view(inspect)


@pytest.mark.parametrize(("user", "root"), [
    ("", True), ("0", True), ("root", True), ("0:0", True), ("root:staff", True),
    ("1000", False), ("1000:0", False), ("app", False), ("nobody:nogroup", False)])
def test_root_user(user: str, root: bool) -> None:
    assert docker_view({"Config": {"User": user}})["root"] is root


@pytest.mark.parametrize(("options", "nnp", "seccomp"), [
    (["no-new-privileges"], True, "default"),
    (["no-new-privileges:true"], True, "default"),
    (["no-new-privileges=true"], True, "default"),
    (["no-new-privileges:false"], False, "default"),
    (["seccomp:unconfined"], False, "unconfined"),
    (["seccomp=/etc/seccomp.json"], False, "/etc/seccomp.json")])
def test_security_options(options: list[str], nnp: bool, seccomp: str) -> None:
    view = docker_view({"HostConfig": {"SecurityOpt": options}})
    assert (view["noNewPrivileges"], view["seccomp"]) == (nnp, seccomp)


@pytest.mark.parametrize(("source", "socket", "sensitive"), [
    ("/var/run/docker.sock", True, []), ("/run/containerd/containerd.sock", True, []),
    ("/var/run", True, []), ("/", False, ["/"]), ("/etc/shadow", False, ["/etc/shadow"]),
    ("/proc/", False, ["/proc"]), ("/sys/fs/cgroup", False, ["/sys/fs/cgroup"]),
    ("/usrdata", False, []), ("/srv/app", False, []), ("/home/etc", False, [])])
def test_host_paths(source: str, socket: bool, sensitive: list[str]) -> None:
    view = docker_view({"Mounts": [{"Type": "bind", "Source": source, "Destination": "/m",
                                    "RW": True}]})
    assert (view["dockerSocket"], view["sensitiveMounts"]) == (socket, sensitive)


def test_published_ports() -> None:
    view = docker_view({
        "HostConfig": {"PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "80"}],
                                        "53/udp": [{"HostIp": "::", "HostPort": "53"}]},
                       "PublishAllPorts": True},
        "Config": {"ExposedPorts": {"9000/tcp": {}}},
        "NetworkSettings": {"Ports": {"8443/tcp": [{"HostIp": "", "HostPort": "32768"}],
                                      "81/tcp": None}}})
    assert view["publishedAllInterfaces"] == ["53/udp", "8443/tcp", "9000/tcp"]


# -- the fixtures are what the real dockerd gives ---------------------------------------

LIVE = ("hardened", "cap-add-sys-admin", "docker-socket", "host-network",
        "root-no-health-check", "ports-all-interfaces")


def test_containers_created_on_the_real_dockerd_fail_the_same_checks(docker_host: str,
                                                                     busybox_image: str) -> None:
    """What the fixtures were captured as still gives their findings on today's engine
    (created, not started: the checks read the configuration)."""
    _tag_images(docker_host, busybox_image)
    made: list[str] = []
    try:
        for name in LIVE:
            variant = CAPTURED[name]
            made.append(docker_cli(docker_host, "create", "--label", f"{TEST_LABEL}=1",
                                   *variant.args(), variant.image, "sleep", "300").split()[-1])
            inspect = json.loads(docker_cli(docker_host, "inspect", made[-1]))[0]
            assert found(inspect) == variant.expect, name
    finally:
        if made:
            docker_cli(docker_host, "rm", "-f", *made)


# -- capturing the fixtures again -------------------------------------------------------

def _tag_images(docker_host: str, image: str) -> None:
    for tag in (PINNED, ELSEWHERE):
        docker_cli(docker_host, "tag", image, tag)


def _edited(inspect: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    edited: dict[str, Any] = json.loads(json.dumps(inspect))
    for path, value in changes.items():
        *parents, key = path.split(".")
        node = edited
        for parent in parents:
            node = node[parent]
        if isinstance(value, str) and "{" in value:  # "{Config.Image}@{Image}"
            value = value.replace("{Config.Image}", inspect["Config"]["Image"]).replace(
                "{Image}", inspect["Image"])
        node[key] = value
    return edited


def capture(docker_host: str, names: Sequence[str]) -> None:
    """Run each CAPTURED container, write its inspect output, remove it; then EDITED."""
    _tag_images(docker_host, "remedyd-test/busybox:latest")
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name in names or list(CAPTURED):
        variant = CAPTURED[name]
        container = f"sec-{name}"
        docker_cli(docker_host, "rm", "-f", container)  # one an interrupted capture left
        docker_cli(docker_host, "run", "-d", "--name", container, "--label",
                   f"{TEST_LABEL}=1", *variant.args(), variant.image, "sleep", "300")
        try:
            inspect: list[JSONValue] = json.loads(docker_cli(docker_host, "inspect", container))
        finally:
            docker_cli(docker_host, "rm", "-f", container)
        (FIXTURES / f"{name}.json").write_text(json.dumps(inspect[0], indent=2) + "\n")
    for name, edit in EDITED.items():
        edited = _edited(fixture(edit.base), edit.changes)
        edited["Name"] = f"/sec-{name}"
        (FIXTURES / f"{name}.json").write_text(json.dumps(edited, indent=2) + "\n")


if __name__ == "__main__":
    capture(os.environ.get("DOCKER_HOST", f"unix://{SOCKET}"), sys.argv[1:])
