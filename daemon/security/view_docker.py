"""The security view of a Docker container's inspect output (contract:
daemon/security/events.py).

Read as the CIS Docker Benchmark's audit steps read `docker inspect` (v1.6.0, 5.x), so a
check is a plain comparison in CEL. The view is also what the baseline keeps and diffs
field by field, so it holds only what a recreate with the same configuration
reproduces: no State, no timestamps, no container or image ids, no addresses, no host
ports Docker picks, no names of anonymous volumes.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from typing import Any

from daemon.core.events import JSONValue
from daemon.security.images import parse_image

# CIS 5.5: host directories no container should mount; a path under one is as
# sensitive (/etc/shadow, /proc/sysrq-trigger), except "/", which everything is under.
SENSITIVE_DIRS = ("/boot", "/dev", "/etc", "/lib", "/proc", "/sys", "/usr")
# CIS 5.31: the engine's API socket, or a directory that holds it.
_SOCKET_NAMES = ("docker.sock", "containerd.sock", "cri-dockerd.sock", "podman.sock")
_SOCKET_DIRS = ("/run", "/var/run", "/run/docker", "/var/run/docker", "/run/containerd",
                "/var/run/containerd", "/run/podman", "/var/run/podman")
_ALL_INTERFACES = ("", "0.0.0.0", "::", "[::]")
# Labels whose value changes without the configuration changing (Compose writes a
# config hash, its own version and the image id), so the baseline would drift on every
# pull or upgrade; and image build metadata that changes on every rebuild.
_VOLATILE_LABELS = ("com.docker.compose.config-hash", "com.docker.compose.version",
                    "com.docker.compose.image", "com.docker.compose.container-number",
                    "com.docker.compose.replace", "org.opencontainers.image.created",
                    "org.opencontainers.image.revision")
_ANONYMOUS_VOLUME = re.compile(r"^[0-9a-f]{64}$")


def docker_view(inspect: Mapping[str, Any]) -> dict[str, JSONValue]:
    """Normalised security-relevant content of `inspect`; every key present."""
    host: Mapping[str, Any] = inspect.get("HostConfig") or {}
    config: Mapping[str, Any] = inspect.get("Config") or {}
    options = [str(o) for o in host.get("SecurityOpt") or []]
    user = str(config.get("User") or "")
    labels = {str(k): str(v) for k, v in (config.get("Labels") or {}).items()
              if k not in _VOLATILE_LABELS}
    mounts = _mounts(inspect.get("Mounts") or [])
    host_paths = [str(m["source"]) for m in mounts if m["type"] == "bind"]
    image = parse_image(str(config.get("Image") or "")).as_dict()
    name = str(inspect.get("Name") or "").lstrip("/")
    return {
        "privileged": bool(host.get("Privileged")),
        "networkMode": str(host.get("NetworkMode") or ""),
        "pidMode": str(host.get("PidMode") or ""),
        "ipcMode": str(host.get("IpcMode") or ""),
        "utsMode": str(host.get("UTSMode") or ""),
        "usernsMode": str(host.get("UsernsMode") or ""),
        "capAdd": _capabilities(host.get("CapAdd")),
        "capDrop": _capabilities(host.get("CapDrop")),
        "securityOpt": list(options),
        "seccomp": _option(options, "seccomp") or "default",
        "appArmor": _option(options, "apparmor") or str(inspect.get("AppArmorProfile") or ""),
        "noNewPrivileges": _no_new_privileges(options),
        "user": user,
        "root": _is_root(user),
        "healthcheck": _has_healthcheck(config.get("Healthcheck")),
        "memoryLimit": _int(host.get("Memory")),
        "pidsLimit": max(_int(host.get("PidsLimit")), 0),
        "cpus": _cpus(host),
        "cpuShares": _int(host.get("CpuShares")),
        "readOnlyRootfs": bool(host.get("ReadonlyRootfs")),
        "mounts": list(mounts),
        "dockerSocket": any(_is_socket(p) for p in host_paths),
        "sensitiveMounts": _sorted_set(p for p in host_paths if _is_sensitive(p)),
        "devices": _sorted_set(str(d.get("PathOnHost") or "") for d in host.get("Devices") or []
                               if isinstance(d, Mapping)),
        "publishedAllInterfaces": _published_all_interfaces(inspect, host, config),
        "restartPolicy": str((host.get("RestartPolicy") or {}).get("Name") or "no"),
        "restartMaxRetries": _int((host.get("RestartPolicy") or {}).get("MaximumRetryCount")),
        "image": image,
        "images": [{**image, "container": name}],
        "composeProject": labels.get("com.docker.compose.project", ""),
        "composeService": labels.get("com.docker.compose.service", ""),
        "labels": dict(sorted(labels.items())),
    }


def _int(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _cpus(host: Mapping[str, Any]) -> float:
    """The CPU limit in CPUs (`--cpus`, or `--cpu-quota` over `--cpu-period`); 0: none."""
    if nano := _int(host.get("NanoCpus")):
        return nano / 1e9
    quota, period = _int(host.get("CpuQuota")), _int(host.get("CpuPeriod")) or 100_000
    return quota / period if quota > 0 else 0.0


def _capabilities(values: Iterable[Any] | None) -> list[JSONValue]:
    """As `--cap-add` accepts them (sys_admin, CAP_SYS_ADMIN): upper case, no CAP_."""
    return _sorted_set(str(v).upper().removeprefix("CAP_") for v in values or [])


def _option(options: list[str], key: str) -> str:
    """A `--security-opt key=value` (or the older `key:value`) value; "" if absent."""
    for option in options:
        for sep in ("=", ":"):
            if option.startswith(key + sep):
                return option[len(key) + 1:]
    return ""


def _no_new_privileges(options: list[str]) -> bool:
    for option in options:
        if option == "no-new-privileges":
            return True
        if option.startswith(("no-new-privileges=", "no-new-privileges:")):
            return option[len("no-new-privileges") + 1:].lower() == "true"
    return False


def _is_root(user: str) -> bool:
    """No user (the image's root), or uid 0 / root by name, with any group."""
    name = user.partition(":")[0]
    return name in ("", "0", "root")


def _has_healthcheck(health: Any) -> bool:
    if not isinstance(health, Mapping):
        return False
    test = [str(t) for t in health.get("Test") or []]
    return bool(test) and test[0] != "NONE"


def _mounts(raw: Iterable[Any]) -> list[dict[str, JSONValue]]:
    found: list[dict[str, JSONValue]] = []
    for mount in raw:
        if not isinstance(mount, Mapping):
            continue
        kind = str(mount.get("Type") or "")
        if kind == "volume":
            # A named volume is kept by name; an anonymous one's name is new on each
            # recreate and says nothing about what is mounted.
            volume = str(mount.get("Name") or "")
            source = "" if _ANONYMOUS_VOLUME.match(volume) else volume
        else:
            source = _normal(str(mount.get("Source") or ""))
        found.append({"type": kind, "source": source,
                      "destination": str(mount.get("Destination") or ""),
                      "rw": bool(mount.get("RW"))})
    return sorted(found, key=lambda m: (str(m["destination"]), str(m["source"])))


def _normal(path: str) -> str:
    return posixpath.normpath(path) if path else ""


def _is_socket(path: str) -> bool:
    return posixpath.basename(path) in _SOCKET_NAMES or path in _SOCKET_DIRS


def _is_sensitive(path: str) -> bool:
    return path == "/" or any(path == d or path.startswith(d + "/") for d in SENSITIVE_DIRS)


def _published_all_interfaces(inspect: Mapping[str, Any], host: Mapping[str, Any],
                              config: Mapping[str, Any]) -> list[JSONValue]:
    """Container ports ("80/tcp") reachable on every host interface: bound with no host
    IP, 0.0.0.0 or ::, as configured or as running, or all exposed ports under `-P`."""
    ports: set[str] = set()
    network = inspect.get("NetworkSettings") or {}
    for bindings in (host.get("PortBindings") or {}, network.get("Ports") or {}):
        for port, bound in bindings.items():
            if any(str((b or {}).get("HostIp") or "") in _ALL_INTERFACES
                   for b in bound or [] if isinstance(b, Mapping)):
                ports.add(str(port))
    if host.get("PublishAllPorts"):
        ports.update(str(p) for p in config.get("ExposedPorts") or {})
    return _sorted_set(ports)


def _sorted_set(values: Iterable[str]) -> list[JSONValue]:
    """Sorted and without repeats, so the baseline's diff never reports an order."""
    return list(sorted(set(values)))
