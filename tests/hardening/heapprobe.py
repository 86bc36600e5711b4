"""``omi-backend`` with a probe of its Python heap, for the leak tests.

Run as ``python -m tests.hardening.heapprobe serve``: the server as ``omi-backend serve``, but
on SIGUSR1 it collects garbage and writes, to the file named by ``OMI_TEST_HEAP_REPORT``, the
blocks the Python allocator holds (``sys.getallocatedblocks``) and a count of the objects the
collector tracks, by type. Unlike the resident size, these do not depend on what the C
allocators keep after a peak: growth of the order of the connections made (or objects of a
connection's types still alive after it ended) is a leak, not fragmentation.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
from collections import Counter
from types import FrameType

from app.cli import main

REPORT = "OMI_TEST_HEAP_REPORT"


def report(signum: int, frame: FrameType | None) -> None:
    gc.collect()
    types = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())
    path = os.environ[REPORT]
    with open(f"{path}.part", "w") as out:
        json.dump({"blocks": sys.getallocatedblocks(), "objects": dict(types)}, out)
    os.replace(f"{path}.part", path)


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, report)
    sys.exit(main())
