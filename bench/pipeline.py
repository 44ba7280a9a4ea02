"""Upload-to-MP3 time for a 60 s clip, and the gateway's rate for an authorised GET /api/v1/jobs.

Run: .venv/bin/python bench/pipeline.py [--distributed] [--rounds 3] [--seconds 5] [--clients 8]
Embedded: `alchemist up` in a temp dir. Distributed (needs MariaDB as root on 127.0.0.1 and
RabbitMQ guest/guest): auth, gateway, one converter and notification as separate processes.
The load comes from this process (threads with keep-alive clients), not from the server's.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import pymysql

sys.path.insert(0, str(Path(__file__).parent))
from convert import clip  # the benchmark clips, generated once

ALCHEMIST = [sys.executable, "-m", "alchemist"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(stack: ExitStack, args: list[str], env: dict[str, str], log: Path) -> None:
    out = log.open("wb")
    process = subprocess.Popen([*ALCHEMIST, *args], env=env, stdout=out, stderr=out)
    stack.callback(lambda: (process.terminate(), process.wait(30), out.close()))


def wait_ready(url: str) -> None:
    for _ in range(600):
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} never became ready")


def upload_to_ready(base: str, token: str, video: Path) -> tuple[float, float]:
    headers = {"Authorization": f"Bearer {token}"}
    started = time.perf_counter()
    with video.open("rb") as handle:
        job = httpx.post(f"{base}/upload", files={"file": (video.name, handle, "video/mp4")},
                         headers=headers, timeout=120).json()  # fmt: skip
    uploaded = time.perf_counter() - started
    while True:
        status = httpx.get(f"{base}/api/v1/jobs/{job['job_id']}", headers=headers).json()["status"]
        if status in ("done", "failed"):
            assert status == "done", status
            return uploaded, time.perf_counter() - started
        time.sleep(0.02)


def load(url: str, token: str, seconds: float, clients: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    def worker() -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            while time.monotonic() < stop:
                began = time.perf_counter()
                assert client.get(url).status_code == 200
                latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies) / (time.monotonic() - began), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--distributed", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    video = clip(60)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        env = {**os.environ, "ALCHEMIST_DATA_DIR": f"{tmp}/data"}
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        user, password = "bench@example.com", "bench password"
        if args.distributed:
            name = f"alchemist_bench_{secrets.token_hex(4)}"
            root = pymysql.connect(host="127.0.0.1", user="root", autocommit=True)
            root.cursor().execute(f"CREATE DATABASE `{name}`")
            stack.callback(lambda: root.cursor().execute(f"DROP DATABASE `{name}`"))
            auth_port = free_port()
            run = secrets.token_hex(4)
            env.update({
                "MYSQL_HOST": "127.0.0.1", "MYSQL_USER": "root", "MYSQL_DB": name,
                "JWT_SECRET": secrets.token_hex(32), "AMQP_URL": "amqp://guest:guest@127.0.0.1/",
                "VIDEO_QUEUE": f"bench.{run}.video", "MP3_QUEUE": f"bench.{run}.mp3",
                "AUTH_SVC_ADDRESS": f"127.0.0.1:{auth_port}", "MAX_UPLOAD_BYTES": str(1 << 30),
            })  # fmt: skip
            subprocess.run([*ALCHEMIST, "migrate"], env=env, check=True, capture_output=True)
            subprocess.run([*ALCHEMIST, "users", "add", user, "--password-stdin"], env=env,
                           input=password + "\n", text=True, check=True, capture_output=True)  # fmt: skip
            start(
                stack, ["auth", "--host", "127.0.0.1", "--port", str(auth_port)], env, Path(tmp, "auth.log")
            )
            start(stack, ["gateway", "--host", "127.0.0.1", "--port", str(port)], env, Path(tmp, "gw.log"))
            start(stack, ["converter"], env, Path(tmp, "converter.log"))
            start(stack, ["notification"], env, Path(tmp, "notification.log"))
            wait_ready(f"http://127.0.0.1:{auth_port}/healthz")
        else:
            subprocess.run([*ALCHEMIST, "users", "add", user, "--password-stdin"], env=env,
                           input=password + "\n", text=True, check=True, capture_output=True)  # fmt: skip
            start(stack, ["up", "--host", "127.0.0.1", "--port", str(port)], env, Path(tmp, "up.log"))
        wait_ready(f"{base}/readyz")
        token = httpx.post(f"{base}/login", auth=(user, password)).text
        times = [upload_to_ready(base, token, video) for _ in range(args.rounds)]
        rate, latencies = load(f"{base}/api/v1/jobs", token, args.seconds, args.clients)
    mode = "distributed (MariaDB, RabbitMQ, 4 processes)" if args.distributed else "embedded (alchemist up)"
    print(f"{mode}: 60 s 720p clip ({video.stat().st_size / 1e6:.0f} MB), {args.rounds} rounds")
    print(f"  upload           median {statistics.median(t[0] for t in times):6.2f} s")
    print(f"  upload -> MP3    median {statistics.median(t[1] for t in times):6.2f} s")
    cuts = statistics.quantiles(latencies, n=20)
    print(
        f"  GET /api/v1/jobs {rate:7.0f} req/s, p50 {cuts[9] * 1000:.1f} ms, p95 {cuts[18] * 1000:.1f} ms "
        f"({args.clients} clients, {args.seconds:.0f} s)"
    )


if __name__ == "__main__":
    main()
