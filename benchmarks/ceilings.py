"""The ceilings every bulk-data figure is judged against, measured in the same run as the figure.

- loopback TCP: a plain socket pair on 127.0.0.1, one thread sending 1 MiB blocks, the other receiving
  into a preallocated buffer (the most any HTTP response can reach here);
- memcpy: ``np.copyto`` of a buffer the size of the payload (the cost of one extra copy);
- raw zarr read: ``zarr.open_array(...)[...]`` of the same region, no labservice code in the way.

``python benchmarks/ceilings.py [--mb 512] [--zarr PATH --region z0:z1,y0:y1,x0:x1]`` prints them; the other
benchmarks import :func:`measure` and :func:`line`.
"""

from __future__ import annotations

import argparse
import os
import socket
import threading

import numpy as np
from common import best_of as best

BLOCK = 1 << 20


def load() -> str:
    """The 1, 5 and 15 minute load averages, as printed next to every figure."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def socket_bandwidth(nbytes: int = 512 << 20, repeat: int = 3) -> float:
    """Bytes/s through a loopback TCP connection (sender and receiver in two threads of this process)."""
    payload = memoryview(bytearray(BLOCK))
    sink = bytearray(BLOCK)

    def once() -> None:
        server = socket.create_server(("127.0.0.1", 0))
        port = server.getsockname()[1]

        def send() -> None:
            with socket.create_connection(("127.0.0.1", port)) as s:
                left = nbytes
                while left > 0:
                    left -= s.send(payload[: min(BLOCK, left)])

        sender = threading.Thread(target=send)
        sender.start()
        conn, _ = server.accept()
        got = 0
        with conn:
            while got < nbytes:
                n = conn.recv_into(sink)
                if n == 0:
                    break
                got += n
        sender.join()
        server.close()
        assert got == nbytes, (got, nbytes)

    return nbytes / best(once, repeat)


def memcpy_bandwidth(nbytes: int = 256 << 20, repeat: int = 3) -> float:
    """Bytes/s of one numpy copy of an ``nbytes`` buffer (both pages already touched)."""
    src = np.ones(nbytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    return src.nbytes / best(lambda: np.copyto(dst, src), repeat)


def raw_zarr_read(array_path: str, index: tuple, repeat: int = 3) -> tuple[float, np.ndarray]:
    """Bytes/s of ``zarr.open_array(array_path)[index]`` (warm: the first read is not timed), and the array."""
    import zarr

    arr = zarr.open_array(array_path, mode="r")
    out = arr[index]
    return out.nbytes / best(lambda: arr[index], repeat), out


def measure(nbytes: int = 512 << 20) -> dict[str, float]:
    """The machine-wide ceilings in bytes/s: ``socket`` and ``memcpy``."""
    return {"socket": socket_bandwidth(nbytes), "memcpy": memcpy_bandwidth(min(nbytes, 256 << 20))}


def line(name: str, rate: float, ceiling: float | None = None, ceiling_name: str = "") -> str:
    """One printed figure in MB/s, with its share of a ceiling."""
    s = f"  {name:44s} {rate / 1e6:9.1f} MB/s"
    if ceiling:
        s += f"   {rate / ceiling:5.2f} of {ceiling_name}"
    return s


def _region(text: str) -> tuple:
    return tuple(slice(*map(int, part.split(":"))) for part in text.split(","))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=512, help="MB sent through the socket pair")
    ap.add_argument("--zarr", help="a zarr array to read raw (for example DATA/velocity)")
    ap.add_argument("--region", default="0:1", help="its index, comma-separated slices (time first)")
    args = ap.parse_args()
    print(load())
    c = measure(args.mb << 20)
    print(line("loopback TCP socket pair", c["socket"]))
    print(line("memcpy (numpy copyto)", c["memcpy"]))
    if args.zarr:
        rate, _ = raw_zarr_read(args.zarr, _region(args.region))
        print(line(f"raw zarr read of {args.zarr}[{args.region}]", rate, c["socket"], "socket"))
    print(load())


if __name__ == "__main__":
    main()
