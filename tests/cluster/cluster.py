"""The multi-host topology: labservice on separate hosts (network namespaces) that share only a network.

| host | runs |
|---|---|
| lb | nginx: round-robin over api1/api2, passive health checks, GET/HEAD retried on the other host |
| api1, api2 | `labservice serve --workers 2` (engine external, PostgreSQL, Redis) |
| db | PostgreSQL and Redis |
| engine | two `labservice engine` processes |
| dask | `dask scheduler` and two `dask worker` |
| s3 | SeaweedFS (S3) |

Data lives on S3 only: the field datasets are written to SeaweedFS and served from there; the simulation
(a folder of files) is uploaded and each API host downloads its own copy into its own temporary folder.
Each host's processes get their own folders; nothing but the network is shared.

``python -m tests.cluster.cluster`` (``make cluster``) builds it, prints the lb URL and a token, and waits
for Ctrl-C; the tests use :func:`build` as a session fixture.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.plugin.netns import Network

HOSTS = ["lb", "api1", "api2", "db", "engine", "dask", "s3"]
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 120.0  # seconds any one host may take to answer
S3_KEY, S3_SECRET, BUCKET = "labservice", "labservice-secret", "labservice"
API_PORT, LB_PORT, PG_PORT, REDIS_PORT, S3_PORT, DASK_PORT = 8000, 8080, 5432, 6379, 8333, 8786
NT = 12
# Small shards so a 32^3 x 12 cutout job has many parts: long enough to strike mid-job.
JOB_OPTIONS = {"shard_edge": 16, "chunk_edge": 8, "task_bytes": 16 * 16 * 16 * 4, "points_per_task": 2000}
PUBLIC_PER_MINUTE = 120

NGINX = """
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log {dir}/access.log;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  client_max_body_size 256m;
  upstream api {{
    # Passive health checks: one failure takes a host out for fail_timeout.
    server {api1}:{api_port} max_fails=1 fail_timeout=5s;
    server {api2}:{api_port} max_fails=1 fail_timeout=5s;
    keepalive 32;
  }}
  server {{
    listen {lb}:{lb_port};
    location / {{
      proxy_pass http://api;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_connect_timeout 1s;
      proxy_read_timeout 15s;  # above the API's own 503 deadlines (database 3 s, S3 retries)
      proxy_buffering off;
      # Only idempotent requests are retried (nginx never resends a POST unless told to).
      proxy_next_upstream error timeout http_502 http_504;
      proxy_next_upstream_tries 2;
      proxy_next_upstream_timeout 30s;
    }}
  }}
}}
"""


def wait(what: str, check, timeout: float = READY_TIMEOUT, proc: subprocess.Popen | None = None,
         log: Path | None = None) -> None:
    """Poll ``check()`` until true; a timeout or a dead process raises with the log's tail."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            if check():
                return
        except Exception as exc:  # noqa: BLE001 - not ready yet
            last = exc
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    code = None if proc is None else proc.poll()
    raise RuntimeError(f"{what} not ready within {timeout:.0f} s (exit {code}, last {last!r}):\n{tail}")


def tcp_open(host: str, port: int) -> bool:
    with socket.create_connection((host, port), timeout=1):
        return True


class Cluster:
    """The built topology: addresses, URLs, processes by role, and the run's folders (one per host)."""

    def __init__(self, net: Network, root: Path) -> None:
        self.net, self.root = net, root
        self.a = net.addr
        self.lb = f"http://{self.a['lb']}:{LB_PORT}"
        self.api = {h: f"http://{self.a[h]}:{API_PORT}" for h in ("api1", "api2")}
        self.s3 = f"http://{self.a['s3']}:{S3_PORT}"
        self.db_url = f"postgresql://postgres@{self.a['db']}:{PG_PORT}/labservice"
        self.redis_url = f"redis://{self.a['db']}:{REDIS_PORT}/0"
        self.dask = f"tcp://{self.a['dask']}:{DASK_PORT}"
        self.procs: dict[str, Any] = {}
        self.token = ""
        self.datasets: dict[str, str] = {}

    def dir(self, host: str, *more: str) -> Path:
        d = self.root.joinpath(host, *more)
        d.mkdir(parents=True, exist_ok=True)
        return d

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"key": S3_KEY, "secret": S3_SECRET,
                "client_kwargs": {"endpoint_url": self.s3, "region_name": "us-east-1"},
                "config_kwargs": {"retries": {"max_attempts": 2}, "connect_timeout": 2, "read_timeout": 10}}

    # -- hosts -------------------------------------------------------------------------------------
    def start_s3(self) -> None:
        d = self.dir("s3")
        (d / "data").mkdir(exist_ok=True)
        ip = self.a["s3"]
        cmd = [str(BIN / "weed"), "server", f"-dir={d / 'data'}", f"-ip={ip}", f"-ip.bind={ip}",
               f"-s3.port={S3_PORT}", "-s3", "-s3.port.iceberg=0", "-s3.port.lance=0",
               "-volume.max=20", "-master.volumeSizeLimitMB=64"]  # fmt: skip
        log = d / "weed.log"
        self.procs["s3"] = self.net.spawn("s3", cmd, log, cwd=d)

        def ready() -> bool:
            import s3fs

            fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)
            if not fs.exists(BUCKET):
                fs.mkdir(BUCKET)
            fs.pipe(f"{BUCKET}/ready", b"ok")
            return fs.cat(f"{BUCKET}/ready") == b"ok"

        wait("s3 (SeaweedFS)", ready, proc=self.procs["s3"], log=log)

    def start_s3_again(self) -> None:
        """After a partition the same process is still there; this only waits for its answers."""
        wait("s3 back", lambda: httpx.get(self.s3, timeout=2).status_code < 500, timeout=30)

    def start_db(self) -> None:
        from tests.plugin.postgres import _bin

        d = self.dir("db")
        pg = d / "pg"
        pg.mkdir(exist_ok=True)
        shutil.chown(pg, "postgres", "postgres")
        self.net.run("db", ["runuser", "-u", "postgres", "--", _bin("initdb"), "-D", str(pg / "data"), "-A",
                            "trust", "-U", "postgres", "--no-sync"], timeout=120)  # fmt: skip
        with open(pg / "data" / "pg_hba.conf", "a") as hba:  # the private subnet is trusted, as loopback is
            hba.write(f"host all all {self.net.subnet}.0/24 trust\n")
        opts = (f"-p {PG_PORT} -k {pg} -c listen_addresses={self.a['db']},127.0.0.1 -c fsync=off "
                "-c max_connections=300")  # fmt: skip
        self.net.run("db", ["runuser", "-u", "postgres", "--", _bin("pg_ctl"), "-D", str(pg / "data"), "-o", opts,
                            "-l", str(pg / "postgres.log"), "-t", "60", "-w", "start"], timeout=90)  # fmt: skip
        cmd = ["redis-server", "--port", str(REDIS_PORT), "--bind", self.a["db"], "--protected-mode", "no",
               "--save", "", "--appendonly", "no", "--dir", str(d), "--daemonize", "no"]  # fmt: skip
        self.procs["redis"] = self.net.spawn("db", cmd, d / "redis.log")
        wait("redis", lambda: tcp_open(self.a["db"], REDIS_PORT), proc=self.procs["redis"], log=d / "redis.log")
        import psycopg

        with psycopg.connect(self.db_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute('CREATE DATABASE "labservice"')
        from labservice.db import upgrade

        upgrade(self.db_url)

    def start_dask(self) -> None:
        d = self.dir("dask")
        ip = self.a["dask"]
        self.procs["scheduler"] = self.spawn_scheduler()
        wait("dask scheduler", lambda: tcp_open(ip, DASK_PORT), proc=self.procs["scheduler"])
        self.procs["workers"] = [self.spawn_worker(i) for i in range(2)]
        from distributed import Client

        with Client(self.dask, timeout=60, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=READY_TIMEOUT)
        del d

    def spawn_scheduler(self) -> subprocess.Popen:
        cmd = [str(BIN / "dask"), "scheduler", "--host", self.a["dask"], "--port", str(DASK_PORT), "--no-dashboard"]
        return self.net.spawn("dask", cmd, self.dir("dask") / "scheduler.log", env=self.env(),
                              cwd=self.dir("dask"))  # fmt: skip

    def spawn_worker(self, i: int) -> subprocess.Popen:
        cmd = [str(BIN / "dask"), "worker", self.dask, "--nthreads", "1", "--no-nanny", "--host", self.a["dask"],
               "--no-dashboard", "--memory-limit", "1GiB"]  # fmt: skip
        work = self.dir("dask", f"worker{i}")
        return self.net.spawn("dask", cmd, work / "worker.log", env=self.env(), cwd=work)

    def env(self, **more: str) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("LABSERVICE_")}
        return base | {"PYTHONWARNINGS": "ignore", "PYTHONPATH": str(REPO)} | more

    def service_env(self, host: str) -> dict[str, str]:
        """The LABSERVICE_* settings of an API or engine host (its own catalog and data folder)."""
        home = self.dir(host)
        catalog = home / "catalog.yaml"
        import yaml

        catalog.write_text(yaml.safe_dump([
            {"id": k, "url": v, "storage_options": self.storage_options} for k, v in self.datasets.items()
        ]))  # fmt: skip
        return self.env(
            LABSERVICE_DATABASE_URL=self.db_url,
            LABSERVICE_REDIS_URL=self.redis_url,
            LABSERVICE_ENGINE="external",
            LABSERVICE_JOBS_ENABLED="true",
            LABSERVICE_CATALOG=str(catalog),
            LABSERVICE_DATA_DIR=str(self.dir(host, "data")),
            LABSERVICE_SCRATCH_URL=f"s3://{BUCKET}/scratch",
            LABSERVICE_SCRATCH_OPTIONS=json.dumps(self.storage_options),
            LABSERVICE_DASK_SCHEDULER=self.dask,
            LABSERVICE_JOB_OPTIONS=json.dumps(JOB_OPTIONS),
            LABSERVICE_ENGINE_LEASE_SECONDS="3",
            LABSERVICE_ENGINE_POLL_SECONDS="0.2",
            LABSERVICE_ENGINE_MAX_JOBS="1",
            LABSERVICE_TRUSTED_PROXIES=json.dumps([self.a["lb"]]),
            LABSERVICE_PUBLIC_REQUESTS_PER_MINUTE=str(PUBLIC_PER_MINUTE),
            LABSERVICE_METRICS_DIR=str(self.dir(host, "metrics")),
        )

    def start_api(self, host: str) -> None:
        env = self.service_env(host)
        # The simulation is files: each API host downloads its own copy from S3 (no shared disk).
        fetch = ("import s3fs,json,sys; fs=s3fs.S3FileSystem(**json.loads(sys.argv[1])); "
                 "fs.get(sys.argv[2], sys.argv[3], recursive=True)")  # fmt: skip
        self.net.run(host, [sys.executable, "-c", fetch, json.dumps(self.storage_options), f"{BUCKET}/sims/cosmo",
                            str(self.dir(host, "data") / "cosmo")], timeout=120, env=env)  # fmt: skip
        cmd = [str(BIN / "labservice"), "serve", "--host", self.a[host], "--port", str(API_PORT), "--workers", "2"]
        self.procs[host] = self.net.spawn(host, cmd, self.dir(host) / "serve.log", env=env, cwd=self.dir(host))

    def wait_api(self, host: str) -> None:
        wait(host, lambda: httpx.get(self.api[host] + "/readyz", timeout=3).status_code == 200,
             proc=self.procs[host], log=self.dir(host) / "serve.log")  # fmt: skip

    def start_engines(self) -> None:
        from tests.plugin.engine_proc import EngineService

        self.procs["engines"] = []
        for i in range(2):
            env = self.service_env("engine") | {"LABSERVICE_DATA_DIR": str(self.dir("engine", f"e{i}"))}
            self.procs["engines"].append(self.spawn_engine(i, env, EngineService))
        for e in self.procs["engines"]:
            e.wait_ready(READY_TIMEOUT)

    def spawn_engine(self, i: int, env: dict[str, str], cls) -> Any:
        """A `labservice engine` on the engine host, as tests/plugin/engine_proc.EngineService (in the netns)."""
        engine = cls.__new__(cls)
        engine.log = self.dir("engine", f"e{i}") / "engine.log"
        engine.engine_id = None
        engine.proc = self.net.spawn("engine", [str(BIN / "labservice"), "engine"], engine.log, env=env,
                                     cwd=self.dir("engine", f"e{i}"))  # fmt: skip
        return engine

    def start_lb(self) -> None:
        d = self.dir("lb")
        conf = d / "nginx.conf"
        conf.write_text(NGINX.format(dir=d, api1=self.a["api1"], api2=self.a["api2"], api_port=API_PORT,
                                     lb=self.a["lb"], lb_port=LB_PORT))  # fmt: skip
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.procs["lb"] = self.net.spawn("lb", [nginx, "-p", str(d), "-c", str(conf), "-g", "daemon off;"],
                                          d / "nginx.out")  # fmt: skip
        wait("lb", lambda: httpx.get(self.lb + "/readyz", timeout=3).status_code == 200, proc=self.procs["lb"],
             log=d / "error.log")  # fmt: skip

    # -- data --------------------------------------------------------------------------------------
    def upload_data(self, local: Path) -> None:
        """Write the field datasets straight to S3, and upload the simulation folder."""
        import s3fs

        from labservice.devserver import write_sample_datasets
        from tests.plugin.cosmo import build_small_sim
        from tests.plugin.jobs import build

        so = self.storage_options
        for name, url in write_sample_datasets(local / "fields", n=16).items():
            s3fs.S3FileSystem(**so).put(url, f"{BUCKET}/fields/{name}", recursive=True)
            self.datasets[name] = f"s3://{BUCKET}/fields/{name}"
        self.datasets["synthetic"] = f"s3://{BUCKET}/fields/synthetic"
        build(self.datasets["synthetic"], n=32, nt=NT, chunk=8, shard=16, storage_options=so)
        sim = build_small_sim(local / "sims", name="cosmo")
        s3fs.S3FileSystem(**so).put(str(sim), f"{BUCKET}/sims/cosmo", recursive=True)
        self.local_sim = sim

    def make_token(self) -> None:
        from labservice.limits import Limits
        from labservice.tokens import TokenStore

        limits = Limits(points_per_request=100_000, requests_per_minute=1_000_000, max_concurrent=256,
                        jobs_allowed=True, max_running_jobs=8, scratch_bytes=1 << 31, max_job_bytes=1 << 29,
                        max_cutout_bytes=1 << 28)  # fmt: skip
        _, self.token = TokenStore(self.db_url).create("cluster", limits)


def build(workdir: Path | None = None) -> Cluster:
    """Build and start every host; on any failure everything started so far is torn down."""
    net = Network.create(HOSTS)
    root = Path(workdir or tempfile.mkdtemp(prefix=f"{net.prefix}-"))
    root.chmod(0o755)  # PostgreSQL runs as postgres and must reach its folder
    c = Cluster(net, root)
    try:
        c.start_s3()
        c.start_db()
        c.upload_data(c.dir("seed"))
        c.start_dask()
        for host in ("api1", "api2"):
            c.start_api(host)
        c.start_engines()
        for host in ("api1", "api2"):
            c.wait_api(host)
        c.start_lb()
        c.make_token()
    except BaseException:
        teardown(c)
        raise
    return c


def teardown(c: Cluster) -> None:
    """Stop everything; LABSERVICE_CLUSTER_KEEP=1 keeps the hosts' folders (logs) for a post-mortem."""
    c.net.destroy()
    if os.environ.get("LABSERVICE_CLUSTER_KEEP"):
        print(f"cluster folders kept in {c.root}")
    else:
        shutil.rmtree(c.root, ignore_errors=True)


def main() -> None:
    t0 = time.monotonic()
    c = build()
    print(f"cluster {c.net.prefix} up in {time.monotonic() - t0:.0f} s; hosts: {c.a}")
    print(f"lb:    {c.lb}   (curl {c.lb}/api/v1/datasets)")
    print(f"token: {c.token}")
    print("Ctrl-C tears it down.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        teardown(c)
        print("torn down")


if __name__ == "__main__":
    main()
