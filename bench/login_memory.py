"""Peak memory of one `alchemist auth` process under a burst of concurrent logins.

Run: .venv/bin/python bench/login_memory.py [--logins 40] [--users 4] [-e ARGON2_MEMORY_KIB=19456 ...]
Starts the auth service (embedded default, temp data dir), adds users, measures its idle RSS,
fires all logins at once (correct passwords) while sampling its RSS every few milliseconds,
and prints idle and peak RSS, the peak's growth and the answers by status. The environment
(e.g. LOGIN_CONCURRENCY, ARGON2_MEMORY_KIB) is passed through, plus any -e NAME=VALUE.
"""

from __future__ import annotations

import argparse
import collections
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import psutil

MIB = 1 << 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample_peak(process: psutil.Process, stop: threading.Event, peak: list[int]) -> None:
    """Keep the highest RSS seen in peak[0] until stop is set."""
    while not stop.is_set():
        peak[0] = max(peak[0], process.memory_info().rss)
        time.sleep(0.002)


def burst(url: str, accounts: list[tuple[str, str]], logins: int) -> collections.Counter[str]:
    """All logins at once (a barrier lines the threads up); the answers by status."""
    statuses: collections.Counter[str] = collections.Counter()
    start = threading.Barrier(logins)

    def one(index: int) -> None:
        with httpx.Client(timeout=120) as client:
            start.wait()
            try:
                answer = client.post(f"{url}/login", auth=accounts[index % len(accounts)])
                statuses[str(answer.status_code)] += 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1

    threads = [threading.Thread(target=one, args=(i,)) for i in range(logins)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--logins", type=int, default=40)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("-e", "--env", action="append", default=[], help="NAME=VALUE for the auth process")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "ALCHEMIST_DATA_DIR": data, **dict(item.split("=", 1) for item in args.env)}
        alchemist = [sys.executable, "-m", "alchemist"]
        accounts = [(f"load{i}@example.com", f"load password {i}") for i in range(args.users)]
        for email, password in accounts:
            subprocess.run(
                [*alchemist, "users", "add", email, "--password-stdin"],
                input=password + "\n", text=True, env=env, check=True, capture_output=True,
            )  # fmt: skip
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [*alchemist, "auth", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.1)
            for email, password in accounts:  # warm: first requests import and allocate
                httpx.post(f"{url}/login", auth=(email, password), timeout=60).raise_for_status()
            process = psutil.Process(server.pid)
            time.sleep(0.5)
            idle = process.memory_info().rss
            peak, stop = [idle], threading.Event()
            sampler = threading.Thread(target=sample_peak, args=(process, stop, peak))
            sampler.start()
            began = time.monotonic()
            statuses = burst(url, accounts, args.logins)
            took = time.monotonic() - began
            stop.set()
            sampler.join()
        finally:
            server.terminate()
            server.wait(15)
    print(f"{args.logins} concurrent logins in {took:.1f} s: {dict(sorted(statuses.items()))}")
    growth = (peak[0] - idle) / MIB
    print(f"idle RSS {idle / MIB:.0f} MiB, peak {peak[0] / MIB:.0f} MiB, growth {growth:.0f} MiB")


if __name__ == "__main__":
    main()
