"""The Eviction subresource's PodDisruptionBudget check, as the real apiserver makes it."""

from __future__ import annotations

from tests.kube.controller import PODS, pod_ready
from tests.kube.resources import BY_PATH
from tests.kube.selectors import match_labels_selector
from tests.kube.status import ApiError
from tests.kube.store import Obj, Store

PDBS = BY_PATH[("policy/v1", "poddisruptionbudgets")]


def _budget(pdb: Obj, expected: int) -> int:
    spec = pdb.get("spec") or {}

    def resolve(value: object, round_up: bool) -> int:
        if isinstance(value, str) and value.endswith("%"):
            frac = int(value[:-1]) * expected
            return -(-frac // 100) if round_up else frac // 100
        return int(str(value))

    if "minAvailable" in spec:
        return resolve(spec["minAvailable"], True)
    if "maxUnavailable" in spec:
        return expected - resolve(spec["maxUnavailable"], True)
    return 0


def check_eviction(store: Store, pod: Obj) -> None:
    """Raise the 429 (or the 500 for overlapping budgets) a real server answers."""
    ns = pod["metadata"]["namespace"]
    pdbs = [p for p in store.list(PDBS, ns)
            if (p.get("spec") or {}).get("selector") is not None
            and match_labels_selector(p["spec"]["selector"])(pod)]
    if not pdbs:
        return
    if len(pdbs) > 1:
        raise ApiError(500, "This pod has more than one PodDisruptionBudget, which the eviction "
                       "subresource does not support.", "InternalError")
    pdb = pdbs[0]
    selector = match_labels_selector(pdb["spec"]["selector"])
    matching = [p for p in store.list(PODS, ns) if selector(p)]
    healthy = sum(1 for p in matching if pod_ready(p))
    desired = _budget(pdb, len(matching))
    # An unready pod may go as long as the budget is met without it (IfHealthyBudget).
    if not pod_ready(pod) and healthy >= desired:
        return
    if healthy - desired > 0:
        return
    name = pdb["metadata"]["name"]
    raise ApiError(429, "Cannot evict pod as it would violate the pod's disruption budget.",
                   "TooManyRequests",
                   {"causes": [{"reason": "DisruptionBudget",
                                "message": f"The disruption budget {name} needs {desired} "
                                           f"healthy pods and has {healthy} currently"}]})
