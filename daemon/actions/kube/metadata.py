"""Kubernetes actions: metadata (being built)."""

from __future__ import annotations

from daemon.actions.kube.base import KubeAction

CLASSES: tuple[type[KubeAction], ...] = ()
