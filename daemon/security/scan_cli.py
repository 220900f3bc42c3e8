"""`remedyd scan`: one-shot evaluation of the security checks."""

from __future__ import annotations

import argparse
from typing import TextIO


def main(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    err.write("remedyd: not built yet\n")
    return 2
