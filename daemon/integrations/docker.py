"""Docker: the engine's event stream as a source, container actions. aiodocker is imported
only when Docker is on."""

from __future__ import annotations

from daemon.integrations.base import BuildContext, Integration, Plugged, Switch, tri_state


class DockerIntegration(Integration):
    name = "docker"
    event_sources = ("docker",)
    action_names = ("docker.restart", "docker.stop", "docker.kill", "docker.pause",
                    "docker.unpause")

    def enabled(self) -> Switch:
        docker = self.settings.docker
        # Off on a Docker Compose host is a surprise worth a warning.
        return tri_state("docker", docker.enabled, docker.is_enabled(),
                         f"engine at {docker.resolved_url()}",
                         "no DOCKER_HOST and no /var/run/docker.sock", surprising=True)

    def build(self, ctx: BuildContext) -> Plugged:
        from daemon.actions.docker import docker_actions
        from daemon.clients.docker import DockerClient
        from daemon.sources.docker import DockerSource

        docker = self.settings.docker
        client = DockerClient(docker.resolved_url(), docker.request_timeout)
        ctx.stack.push_async_callback(client.close)
        source = DockerSource(client, ctx.emit, ctx.metrics, docker.reconcile_interval)
        ctx.provided["docker.client"] = client
        ctx.provided["docker.source"] = source
        return Plugged(sources=[source], actions=docker_actions(client))
