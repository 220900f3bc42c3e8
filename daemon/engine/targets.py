"""PURE: what a decision on a KPI, probe or webhook event acts on, from its rule's `target:`.

Such an event is about a series, a probe or an alert, not about a container or a
Deployment: the rule names the object from the event's labels
(`name: "{{ $labels.deployment }}"`). A label the template needs and the event lacks
leaves the decision without a target (the `target` guard refuses it, naming the label)
rather than guessing one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from daemon.core.events import Event, Ref
from daemon.core.rules import Target
from daemon.core.templates import render

_LABEL = re.compile(r"\{\{\s*\$labels\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def labels_of(event: Event) -> dict[str, str]:
    """The event's `labels` attribute as strings (none: {})."""
    labels = event.attributes.get("labels")
    if not isinstance(labels, Mapping):
        return {}
    return {str(k): str(v) for k, v in labels.items() if v is not None}


def aim(target: Target, event: Event) -> Ref | str:
    """The Ref `target` names for `event`, or why there is none (the missing label)."""
    labels = labels_of(event)
    source, _, kind = target.kind.partition("/")
    name = render(target.name, labels)
    namespace = render(target.namespace, labels) if target.namespace else ""
    if name is None or namespace is None:
        missing = sorted({label for template in (target.name, target.namespace)
                          for label in _LABEL.findall(template) if not labels.get(label)})
        return (f"target: the event has no label {', '.join(missing)} for "
                f"{target.kind} {target.name!r}"
                + (f" in namespace {target.namespace!r}" if target.namespace else ""))
    if not name:
        return f"target: {target.kind} name {target.name!r} renders empty"
    return Ref(source=source, kind=kind, name=name, namespace=namespace)
