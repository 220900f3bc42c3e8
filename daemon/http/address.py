"""Where a command on this host reaches the running daemon's HTTP server."""

from __future__ import annotations

from daemon.settings import ServerSettings


def daemon_url(server: ServerSettings, override: str | None = None) -> str:
    """`override` (e.g. --url), else [server] listen, as a base URL without a trailing /."""
    if override:
        return override.rstrip("/")
    host = server.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # listening everywhere: loopback reaches it
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{server.port}"
