"""Helpers to run the services as separate processes and talk to them like a user."""

from __future__ import annotations

import email
import email.policy
import json
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.e2e.conftest import ALCHEMIST, free_port


class MailCatcher:
    """An SMTP server on loopback (aiosmtpd) that keeps every message."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self._lock = threading.Lock()
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port())

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)  # type: ignore[arg-type]
        with self._lock:
            self.messages.append(message)  # type: ignore[arg-type]
        return "250 OK"

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def for_job(self, job_id: str) -> list[EmailMessage]:
        with self._lock:
            return [m for m in self.messages if m["X-Alchemist-Job"] == job_id]

    def wait_for_job(self, job_id: str, timeout: float = 90) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.for_job(job_id)
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"no email for job {job_id} within {timeout} s")


def fid_in(message: EmailMessage) -> str:
    """The MP3 fid an email announces."""
    body = message.get_content()
    match = re.search(r"^fid: ([0-9a-fA-F]+)", body, re.MULTILINE)
    assert match, body
    return match.group(1)


@dataclass
class Worker:
    """A worker process and its log."""

    process: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def start_worker(args: list[str], env: dict[str, str], log: Path, ready: str) -> Worker:
    """Start `alchemist ARGS` and wait for `ready` in its log."""
    with log.open("wb") as out:
        process = subprocess.Popen([*ALCHEMIST, *args], env=env, stdout=out, stderr=out)
    worker = Worker(process, log)
    deadline = time.monotonic() + 60
    while ready not in worker.text():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{args} did not start: {worker.text()}")
        time.sleep(0.1)
    return worker


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    """The real curl, as the seeds use it."""
    return subprocess.run(
        ["curl", "-s", "--max-time", "120", *args], capture_output=True, text=True, check=False
    )


def curl_json(*args: str) -> dict[str, object]:
    done = curl(*args)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def stored_blobs(root: Path) -> set[str]:
    """Ids of the blobs a FileStore directory holds (temp files excluded)."""
    return {
        p.name for p in root.rglob("*") if p.is_file() and ".incoming" not in p.parts and p.suffix != ".json"
    }


@dataclass
class Stack:
    """A running system: its URL, environment and the parts a test may poke."""

    url: str
    env: dict[str, str]
    data_dir: Path
    mail: MailCatcher | None
    workers: dict[str, Worker] = field(default_factory=dict)
    auth_process: subprocess.Popen[bytes] | None = None

    def login(self, user: str, password: str) -> str:
        token = curl("-X", "POST", f"{self.url}/login", "-u", f"{user}:{password}").stdout
        assert token.count(".") == 2, token
        return token

    def upload(self, token: str, path: Path) -> dict[str, object]:
        return curl_json("-X", "POST", "-F", f"file=@{path}", "-H", f"Authorization: Bearer {token}",
                         f"{self.url}/upload")  # fmt: skip

    def job(self, token: str, job_id: str) -> dict[str, object]:
        return curl_json("-H", f"Authorization: Bearer {token}", f"{self.url}/api/v1/jobs/{job_id}")

    def wait_until_finished(self, token: str, job_id: str, timeout: float = 90) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(token, job_id)
            if job.get("status") in ("done", "failed"):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish: {self.job(token, job_id)}")
