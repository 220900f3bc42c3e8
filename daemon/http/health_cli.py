"""`remedyd health`: is the daemon on this host alive (or ready)? For HEALTHCHECK and probes.

A command rather than `curl` or `python -c` in the image: it reads the same configuration
as the daemon, so a changed [server] listen does not leave the check asking a dead port.
"""

from __future__ import annotations

import argparse
import urllib.error
import urllib.request
from typing import TextIO

from daemon.http.address import daemon_url

EXIT_OK, EXIT_FAILED = 0, 1
TIMEOUT = 5.0


def main(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from daemon.core.errors import ConfigError
    from daemon.settings import load_settings

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        err.write(f"remedyd health: config error: {exc}\n")
        return EXIT_FAILED
    url = daemon_url(settings.server, args.url) + ("/readyz" if args.ready else "/healthz")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
            out.write(f"{url}: {response.status} {response.read(200).decode(errors='replace')}"
                      .rstrip() + "\n")
            return EXIT_OK
    except urllib.error.HTTPError as exc:
        body = exc.read(500).decode(errors="replace").strip()
        err.write(f"remedyd health: {url} answered {exc.code}: {body}\n")
    except (urllib.error.URLError, OSError) as exc:
        err.write(f"remedyd health: cannot reach {url}: {getattr(exc, 'reason', exc)}\n")
    return EXIT_FAILED
