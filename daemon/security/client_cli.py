"""`remedyd security findings|accept`: the running daemon's security API from the shell."""

from __future__ import annotations

import argparse
from typing import TextIO


def main(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    err.write("remedyd: not built yet\n")
    return 2
