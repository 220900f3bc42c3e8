"""heap.release() gives freed heap back to the operating system (glibc), as the Kubernetes
source does after a kind's first list."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# 25 MiB of blocks too big for Python's own allocator and too small for mmap, so they come
# from glibc's heap; one block allocated after them keeps the heap's top in use, so
# freeing the rest leaves free memory in the middle, which free() never hands back.
SCRIPT = """
import json
from daemon import heap

def anon():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024

blocks = [b"x" * 65536 for _ in range(400)]
pin = b"y" * 65536
del blocks
freed = anon()
released = heap.release()
print(json.dumps({"freed": freed, "after": anon(), "released": released}))
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_heap_goes_back_to_the_os() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=60, check=True, cwd=ROOT).stdout
    result = json.loads(out)
    assert result["released"] is True
    assert result["freed"] - result["after"] > 15, result  # MiB of resident memory
