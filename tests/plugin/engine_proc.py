"""The job engine in a process of its own, two ways.

- :class:`EngineService`: the real thing, `labservice engine`, configured by ``LABSERVICE_*`` variables;
  it prints ``engine <id> ready`` once it takes jobs. Stopped with SIGTERM (or killed with SIGKILL).
- ``python -m tests.plugin.engine_proc '{"root": ..., "scheduler": ..., "request": {...}}'`` from the
  repository root: a stand-in service that starts a JobEngine, submits one job, prints its id and runs
  until killed (tests/jobs/test_faults.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

LABSERVICE = str(Path(sys.executable).parent / "labservice")


class EngineService:
    """A `labservice engine` process; its log (stdout and stderr) goes to ``log``."""

    def __init__(self, env: dict[str, str], log: Path, cwd: Path | None = None) -> None:
        self.log = log
        with open(log, "wb") as f:
            self.proc = subprocess.Popen(
                [LABSERVICE, "engine"],
                stdout=f,
                stderr=subprocess.STDOUT,
                cwd=cwd or log.parent,
                env=os.environ | {"PYTHONWARNINGS": "ignore"} | env,
            )
        self.engine_id: str | None = None

    def wait_ready(self, timeout: float = 90.0) -> EngineService:
        """Wait for the ``engine <id> ready`` line; its id goes to ``engine_id``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.text().splitlines():
                words = line.split()
                if len(words) == 3 and words[0] == "engine" and words[2] == "ready":
                    self.engine_id = words[1]
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        tail = self.text()[-3000:]
        raise RuntimeError(f"`labservice engine` did not get ready (exit {self.proc.poll()}):\n{tail}")

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no clean-up, its leases run out by themselves."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 40.0) -> int:
        """SIGTERM: the engine hands its jobs back and exits; SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.proc.returncode)


def main() -> None:
    from tests.plugin.jobs import make_engine

    args = json.loads(sys.argv[1])
    engine = make_engine(Path(args["root"]), scheduler=args["scheduler"]).start()
    rec = engine.submit(args.get("owner", "tokR"), args["request"])
    print(rec.id, flush=True)
    deadline = time.monotonic() + 300  # bounded: the test kills us long before
    while time.monotonic() < deadline:
        time.sleep(0.5)


if __name__ == "__main__":
    main()
