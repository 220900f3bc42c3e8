"""Which pods may be evicted or deleted: the refusals `kubectl drain` makes, read from the
pod as the API server has it now."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from daemon.actions.base import Refusal

# Set by the kubelet on the API's copy of a static pod: the kubelet runs it from a file.
MIRROR = "kubernetes.io/config.mirror"
_FINISHED = ("Succeeded", "Failed")


def controller_of(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or ():
        if isinstance(ref, dict) and ref.get("controller") is True:
            return ref
    return None


def removal_refusal(pod: Mapping[str, Any], allow_unowned: bool,
                    evicting: bool) -> Refusal | None:
    """Why removing this pod would not do what a rule means by it, or None."""
    metadata = pod.get("metadata") or {}
    where = f"pod {metadata.get('namespace')}/{metadata.get('name')}"
    if MIRROR in (metadata.get("annotations") or {}):
        return Refusal("preflight", f"{where} is the mirror of a static pod ({MIRROR}): the "
                       "kubelet runs it from a file, removing the mirror does not stop it")
    owner = controller_of(pod)
    if owner is not None and owner.get("kind") == "DaemonSet" and evicting:
        # A delete is a restart here (the DaemonSet recreates it); an eviction means
        # "move it elsewhere", which a DaemonSet pod cannot be.
        return Refusal("preflight", f"{where} is controlled by DaemonSet "
                       f"{owner.get('name')}: it would come straight back on the same node")
    finished = (pod.get("status") or {}).get("phase") in _FINISHED
    if owner is None and not allow_unowned and not (evicting and finished):
        return Refusal("preflight", f"no controller owns {where}: once removed it is gone for "
                       "good (set allow_unowned: true on the rule to allow that)")
    return None
