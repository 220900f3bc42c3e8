"""Every integration the daemon knows, in the order they are built."""

from __future__ import annotations

from daemon.integrations.base import Integration
from daemon.integrations.docker import DockerIntegration
from daemon.integrations.notify import NotifyIntegration

INTEGRATIONS: tuple[type[Integration], ...] = (NotifyIntegration, DockerIntegration)
