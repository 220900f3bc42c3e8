"""Image references parsed as the distribution reference grammar does (what `docker pull`
and the kubelet accept): `[host[:port]/]path[:tag][@algo:hex]`.

The first path component is a registry host only when it looks like one (a `.` or a
`:`, or `localhost`), so `registry:5000/img` has host `registry:5000` and `library/redis`
has none. A reference without a host comes from the engine's default registry; it is
reported with `registry: ""`, never with a host name remedyd would have to assume.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from daemon.core.events import JSONValue

_TAG = re.compile(r"^[\w][\w.-]{0,127}$")


@dataclass(frozen=True, slots=True)
class ImageRef:
    reference: str
    registry: str  # "" : the default registry
    repository: str
    tag: str  # "" : none given (the engine pulls `latest`)
    digest: str  # "" : not pinned

    @property
    def latest(self) -> bool:
        """Untagged and unpinned, or tagged `latest` without a digest: what runs can change
        under the same name."""
        return not self.digest and self.tag in ("", "latest")

    def as_dict(self) -> dict[str, JSONValue]:
        return {"reference": self.reference, "registry": self.registry,
                "repository": self.repository, "tag": self.tag, "digest": self.digest,
                "latest": self.latest, "pinned": bool(self.digest)}


def parse_image(reference: str) -> ImageRef:
    """The parts of an image reference; an unparseable one keeps what can be read, with
    the whole text as its repository, so a check can still report it."""
    rest, _, digest = reference.strip().partition("@")
    registry = ""
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, rest = first, remainder
    repository, tag = rest, ""
    name_end = repository.rfind("/")
    colon = repository.rfind(":")
    if colon > name_end:
        candidate = repository[colon + 1:]
        if _TAG.match(candidate):
            repository, tag = repository[:colon], candidate
    return ImageRef(reference=reference, registry=registry, repository=repository,
                    tag=tag, digest=digest)


def registry_allowed(image: ImageRef, allowed: list[str]) -> bool:
    """Whether `image` comes from one of `allowed`: a host (`registry.example:5000`), a
    host with a path prefix (`registry.example/team`), or "" for the default registry."""
    for entry in allowed:
        entry = entry.rstrip("/")
        if entry == "":
            if image.registry == "":
                return True
            continue
        host, _, prefix = entry.partition("/")
        if image.registry != host:
            continue
        if not prefix or image.repository == prefix or image.repository.startswith(
                prefix + "/"):
            return True
    return False
