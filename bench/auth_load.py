"""Short load on `alchemist auth` from a second process: login and validate requests/s.

Run: .venv/bin/python bench/auth_load.py [--seconds 5] [--clients 8]
Starts the auth service (embedded default, temp data dir), adds a user, then drives
POST /login and POST /validate with a pool of keep-alive clients and prints the rates.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def drive(url: str, seconds: float, clients: int, **request: object) -> tuple[float, list[float]]:
    """Requests/s over `seconds` with `clients` threads, and each request's latency."""
    latencies: list[float] = []
    errors: list[int] = []
    stop = time.monotonic() + seconds

    def worker() -> None:
        with httpx.Client(timeout=30) as client:
            while time.monotonic() < stop:
                start = time.perf_counter()
                status = client.post(url, **request).status_code  # type: ignore[arg-type]
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    errors.append(status)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, e.g. {errors[:5]}")
    return len(latencies) / (time.monotonic() - began), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "ALCHEMIST_DATA_DIR": data, "LOGIN_MAX_FAILURES": "1000000"}
        alchemist = [sys.executable, "-m", "alchemist"]
        subprocess.run(
            [*alchemist, "users", "add", "load@example.com", "--password-stdin"],
            input="load password\n",
            text=True,
            env=env,
            check=True,
        )
        port = free_port()
        server = subprocess.Popen(
            [*alchemist, "auth", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stderr=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    httpx.get(f"{base}/healthz")
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            auth = ("load@example.com", "load password")
            token = httpx.post(f"{base}/login", auth=auth).text
            rows = [
                ("POST /login", drive(f"{base}/login", args.seconds, args.clients, auth=auth)),
                (
                    "POST /validate",
                    drive(
                        f"{base}/validate",
                        args.seconds,
                        args.clients,
                        headers={"Authorization": f"Bearer {token}"},
                    ),
                ),
            ]
        finally:
            server.terminate()
            server.wait()
    print(f"{'endpoint':16} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8}   ({args.clients} clients)")
    for name, (rate, latencies) in rows:
        cuts = statistics.quantiles(latencies, n=20)
        print(f"{name:16} {rate:8.1f} {cuts[9] * 1000:8.1f} {cuts[18] * 1000:8.1f}")


if __name__ == "__main__":
    main()
