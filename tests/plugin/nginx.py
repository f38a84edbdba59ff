"""A real nginx reverse proxy for tests: serves an upstream under a path prefix, as a deployment would.

>>> with NginxProxy(folder, "/lab", upstream_port) as proxy:
...     httpx.get(proxy.url + "/lab/api/v1/datasets")

``location /lab/ { proxy_pass http://upstream/; }`` strips the prefix and appends the peer to
``X-Forwarded-For``; the upstream runs with ``--root-path /lab``. Helper only (no fixtures): tests skip when
nginx is not installed (``apt-get install nginx``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from labservice.devserver import free_ports

CONF = """
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location {prefix}/ {{
      proxy_pass http://127.0.0.1:{upstream}/;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
  }}
}}
"""


def nginx_available() -> bool:
    return shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()


class NginxProxy:
    """nginx in the foreground in ``folder``, proxying ``prefix``/ to 127.0.0.1:``upstream``/."""

    def __init__(self, folder: Path, prefix: str, upstream: int) -> None:
        self.folder = Path(folder)
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        conf = self.folder / "nginx.conf"
        conf.write_text(CONF.format(dir=self.folder, port=self.port, prefix=prefix, upstream=upstream))
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.cmd = [binary, "-p", str(self.folder), "-c", str(conf), "-g", "daemon off;"]
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> NginxProxy:
        log = open(self.folder / "nginx.out", "ab")
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.folder / 'nginx.out').read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("nginx did not listen within 20 s")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # nginx's master stops its worker on SIGTERM
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
