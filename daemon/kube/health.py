"""Whether a cached Pod counts as unhealthy (for the short-circuit guard).

Unhealthy is what a rule would act on: running but not Ready, a container crash looping
or unable to pull or start its image, a pod that failed. A pod still starting (Pending,
ContainerCreating) or terminating is neither healthy nor unhealthy: a rollout has such
pods all the time, and counting them would short-circuit every rollout.
"""

from __future__ import annotations

from typing import Any

# Waiting reasons of a container that will not get better on its own soon.
STUCK = frozenset({"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull",
                   "CreateContainerConfigError", "CreateContainerError", "InvalidImageName",
                   "RunContainerError"})


def unhealthy(pod: dict[str, Any]) -> str | None:
    """Why the pod is unhealthy, or None when it is healthy or still coming or going."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or ():
        waiting = ((container.get("state") or {}).get("waiting") or {}).get("reason")
        if waiting in STUCK:
            return f"container {container.get('name')} {waiting}"
    phase = status.get("phase")
    if phase == "Failed":
        return "phase Failed"
    if phase != "Running":
        return None
    ready = next((c for c in status.get("conditions") or ()
                  if isinstance(c, dict) and c.get("type") == "Ready"), None)
    if ready is None or ready.get("status") != "True":
        return "running, not Ready"
    return None

