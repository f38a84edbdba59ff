"""Hosts in Linux network namespaces on one private bridge: separate machines that share only a network.

>>> net = Network.create(["lb", "api1"])   # root only; names carry a unique run prefix
>>> proc = net.spawn("api1", ["labservice", "serve", ...], log=path)
>>> net.cut("api1"); net.mend("api1")       # pull and replug the host's cable
>>> net.destroy()                            # every process in every namespace killed, namespaces gone

Layout: the bridge lives in a namespace of its own (``<prefix>-sw``), so the host's firewall never sees
the traffic; each host is a namespace with ``lo`` and ``eth0`` (a veth whose peer is on the bridge). The
test process reaches the hosts through one more veth, ``<prefix>r`` in the root namespace with the
subnet's ``.1``; no namespace has a default route, so nothing leaves the subnet. Deleting the switch
namespace deletes every veth, the root one included. Runs are named ``lc<6 hex>``; a run records its pid
in ``/run/labcluster/<prefix>`` and :func:`clean_stale` removes runs whose owner is gone.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

FAMILY = "lc"  # every run's names start with this, then 6 hex digits
OWNERS = Path("/run/labcluster")
IP = shutil.which("ip") or "/usr/sbin/ip"


def netns_available() -> str | None:
    """None when namespaces can be made here, else why not (for a skip message)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not Path(IP).exists():
        return "iproute2 is not installed (apt-get install iproute2, or `make services`)"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def _namespaces() -> list[str]:
    out = _ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_namespace(ns: str) -> None:
    """SIGKILL every process in ``ns`` (twice bounded, for children forked meanwhile), then delete it."""
    for _ in range(5):
        pids = [int(p) for p in _ip("netns", "pids", ns, check=False).stdout.split()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    _ip("netns", "del", ns, check=False)


def destroy_prefix(prefix: str) -> None:
    """Remove every namespace (hence every veth) of the run ``prefix``, and its owner file."""
    for ns in _namespaces():
        if ns.startswith(prefix + "-"):
            _kill_namespace(ns)
    _ip("link", "del", f"{prefix}r", check=False)  # normally gone with the switch namespace
    (OWNERS / prefix).unlink(missing_ok=True)


def leftovers(prefix: str) -> list[str]:
    """Namespaces and root interfaces of ``prefix`` still present (empty after a clean teardown)."""
    links = _ip("-o", "link", "show", check=False).stdout
    found = [ns for ns in _namespaces() if ns.startswith(prefix + "-")]
    found += [w.split("@")[0] for line in links.splitlines() for w in line.split()[1:2] if w.startswith(prefix)]
    return found


def clean_stale() -> list[str]:
    """Destroy the runs of this family whose owner process is gone (a crashed or killed earlier run)."""
    prefixes = {ns.split("-")[0] for ns in _namespaces() if ns.startswith(FAMILY) and "-" in ns}
    stale = []
    for prefix in sorted(prefixes):
        owner = OWNERS / prefix
        try:
            os.kill(int(owner.read_text()), 0)
            continue  # a live run: not ours to touch
        except (OSError, ValueError):
            stale.append(prefix)
            destroy_prefix(prefix)
    return stale


@dataclass
class Network:
    """A private /24 with one namespace per host; ``addr[host]`` is its IPv4 address."""

    prefix: str
    subnet: str  # "10.a.b" (the first three octets)
    addr: dict[str, str] = field(default_factory=dict)
    procs: list[subprocess.Popen] = field(default_factory=list)
    destroyed: bool = False

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    @classmethod
    def create(cls, hosts: list[str], prefix: str | None = None) -> Network:
        why = netns_available()
        if why:
            raise RuntimeError(why)
        clean_stale()
        prefix = prefix or f"{FAMILY}{uuid.uuid4().hex[:6]}"
        net = cls(prefix, _free_subnet(prefix))
        OWNERS.mkdir(parents=True, exist_ok=True)
        (OWNERS / prefix).write_text(str(os.getpid()))
        atexit.register(net.destroy)  # even when the caller never reaches its own teardown
        try:
            net._build(hosts)
        except BaseException:
            net.destroy()
            raise
        return net

    def _build(self, hosts: list[str]) -> None:
        sw = self.switch
        _ip("netns", "add", sw)
        _ip("-n", sw, "link", "set", "lo", "up")
        _ip("-n", sw, "link", "add", "br0", "type", "bridge")
        _ip("-n", sw, "link", "set", "br0", "up")
        # The test process's own port: the root end keeps .1, its peer joins the bridge.
        _ip("link", "add", f"{self.prefix}r", "type", "veth", "peer", "name", "up0", "netns", sw)
        _ip("-n", sw, "link", "set", "up0", "master", "br0", "up")
        _ip("addr", "add", f"{self.subnet}.1/24", "dev", f"{self.prefix}r")
        _ip("link", "set", f"{self.prefix}r", "up")
        for i, host in enumerate(hosts):
            ns, port = self.ns(host), f"p{i}"
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", sw, "link", "set", port, "master", "br0", "up")
            self.addr[host] = f"{self.subnet}.{10 + i}"
            _ip("-n", ns, "addr", "add", f"{self.addr[host]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        self.ports = {h: f"p{i}" for i, h in enumerate(hosts)}

    # -- processes ---------------------------------------------------------------------------------
    def spawn(self, host: str, cmd: list[str], log: Path, env: dict[str, str] | None = None,
              cwd: Path | None = None, user: str | None = None) -> subprocess.Popen:
        """Run ``cmd`` on ``host`` (its own session, output to ``log``); ``user`` runs it as that user."""
        full = [IP, "netns", "exec", self.ns(host)]
        if user:
            full += ["runuser", "-u", user, "--"]
        with open(log, "ab") as f:
            proc = subprocess.Popen(full + cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                    start_new_session=True)  # fmt: skip
        self.procs.append(proc)
        return proc

    def run(self, host: str, cmd: list[str], timeout: float = 60, **kw) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` on ``host`` to the end; an error names the command and its output."""
        done = subprocess.run([IP, "netns", "exec", self.ns(host), *cmd], capture_output=True, text=True,
                              timeout=timeout, **kw)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"{host}: {' '.join(cmd)} failed ({done.returncode}): {done.stdout}{done.stderr}")
        return done

    def pids(self, host: str) -> list[int]:
        return [int(p) for p in _ip("netns", "pids", self.ns(host), check=False).stdout.split()]

    # -- faults ------------------------------------------------------------------------------------
    def cut(self, host: str) -> None:
        """Pull the host's cable: its bridge port goes down, packets to and from it are dropped."""
        _ip("-n", self.switch, "link", "set", self.ports[host], "down")

    def mend(self, host: str) -> None:
        _ip("-n", self.switch, "link", "set", self.ports[host], "up")

    # -- teardown ----------------------------------------------------------------------------------
    def destroy(self) -> None:
        """Kill every process of every host and delete the namespaces (idempotent, never raises)."""
        if self.destroyed:
            return
        self.destroyed = True
        for p in self.procs:  # our direct children: a polite SIGTERM to the group first
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except OSError:
                    pass
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        destroy_prefix(self.prefix)
        for p in self.procs:
            try:
                p.wait(timeout=5)  # reap
            except subprocess.TimeoutExpired:
                pass


def _free_subnet(prefix: str) -> str:
    """A 10.x.y/24 derived from the prefix that no root-namespace route uses yet."""
    routes = _ip("-4", "route", "show", check=False).stdout
    seed = int(hashlib.sha256(prefix.encode()).hexdigest(), 16)
    for k in range(200):
        x, y = 100 + (seed >> (8 * k)) % 150, (seed >> (8 * k + 4)) % 250
        if f"10.{x}.{y}." not in routes:
            return f"10.{x}.{y}"
    raise RuntimeError("no free 10.x.y.0/24 subnet for the cluster; remove stale routes (`ip route`)")
