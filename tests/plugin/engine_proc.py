"""A stand-in service process: start a JobEngine on a scheduler, submit one job, run until killed.

Usage, from the repository root: python -m tests.plugin.engine_proc '{"root": ..., "scheduler": ...,
"request": {...}}'. Prints the job id.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tests.plugin.jobs import make_engine


def main() -> None:
    args = json.loads(sys.argv[1])
    engine = make_engine(Path(args["root"]), scheduler=args["scheduler"]).start()
    rec = engine.submit(args.get("owner", "tokR"), args["request"])
    print(rec.id, flush=True)
    deadline = time.monotonic() + 300  # bounded: the test kills us long before
    while time.monotonic() < deadline:
        time.sleep(0.5)


if __name__ == "__main__":
    main()
