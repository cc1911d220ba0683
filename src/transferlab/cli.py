"""Entry point shared by every stage: one-line errors, optional timing/memory record."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Callable

from transferlab.config import ConfigError


def run_stage(name: str, main: Callable[[list[str]], None]) -> None:
    """Run ``main(argv)``; bad input exits 2 with one line on stderr.

    With ``TRANSFERLAB_PROFILE=<file>`` set, append the stage's wall time and peak
    resident memory (this process and its children) to that JSON-lines file.
    """
    started = time.perf_counter()
    try:
        main(sys.argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    profile = os.environ.get("TRANSFERLAB_PROFILE")
    if profile:
        peak_kb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        record = {"stage": name, "argv": sys.argv[1:], "wall_s": round(time.perf_counter() - started, 2),
                  "peak_rss_mb": round(peak_kb / 1024, 1)}
        with open(profile, "a") as handle:
            handle.write(json.dumps(record) + "\n")
