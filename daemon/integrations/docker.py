"""Docker: the engine's event stream as a source, container actions. aiodocker is imported
only when Docker is on."""

from __future__ import annotations

from daemon.integrations.base import BuildContext, Integration, Plugged, Switch


class DockerIntegration(Integration):
    name = "docker"
    event_sources = ("docker",)
    action_names = ("docker.restart", "docker.stop", "docker.kill", "docker.pause",
                    "docker.unpause")

    def enabled(self) -> Switch:
        docker = self.settings.docker
        if docker.is_enabled():
            return Switch(True, f"docker source on: engine at {docker.resolved_url()}")
        if docker.enabled == "auto":
            return Switch(False, 'docker source off: [docker] enabled = "auto" found no '
                          "DOCKER_HOST and no /var/run/docker.sock; set enabled = true to insist",
                          surprising=True)
        return Switch(False, "docker source off ([docker] enabled = false)")

    def build(self, ctx: BuildContext) -> Plugged:
        from daemon.actions.docker import docker_actions
        from daemon.clients.docker import DockerClient
        from daemon.sources.docker import DockerSource

        docker = self.settings.docker
        client = DockerClient(docker.resolved_url(), docker.request_timeout)
        ctx.stack.push_async_callback(client.close)
        source = DockerSource(client, ctx.emit, ctx.metrics, docker.reconcile_interval)
        return Plugged(sources=[source], actions=docker_actions(client))
