"""`alchemist convert --server URL`: log in, upload, follow the job, download the MP3."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import Progress, TaskID

from alchemist.cli.output import Outcome, progress_bars, refusal, summary

TIMEOUT = httpx.Timeout(30, read=None)


class RemoteError(Exception):
    """The server refused something; the message is what it said."""


def run_remote(args: argparse.Namespace, targets: list[tuple[Path, Path]]) -> int:
    """Convert every file on the server; exit 1 when any failed."""
    console = Console(stderr=True)
    user = args.user or os.environ.get("ALCHEMIST_USER") or input("Email: ")
    password = os.environ.get("ALCHEMIST_PASSWORD") or getpass.getpass("Password: ")
    base = args.server.rstrip("/")
    login = httpx.post(f"{base}/login", auth=(user, password), timeout=TIMEOUT)
    if login.status_code != 200:
        console.print(f"alchemist convert: login failed: {_detail(login)}")
        return 1
    headers = {"Authorization": f"Bearer {login.text.strip()}"}
    with (
        httpx.Client(base_url=base, headers=headers, timeout=TIMEOUT) as client,
        progress_bars(console) as bars,
        ThreadPoolExecutor(max(1, args.jobs)) as pool,
    ):
        futures = [
            pool.submit(_convert_one, client, source, output, args.force, bars) for source, output in targets
        ]
        outcomes = [future.result() for future in futures]
    summary(outcomes)
    failed = [o for o in outcomes if o.error]
    for outcome in failed:
        print(f"failed: {outcome.source}: {outcome.error}", file=sys.stderr)
    return 1 if failed else 0


def _convert_one(client: httpx.Client, source: Path, output: Path, force: bool, bars: Progress) -> Outcome:
    task = bars.add_task(source.name, total=None)
    reason = refusal(source, output, force)
    if reason:
        return Outcome(source, output, error=reason)
    try:
        with source.open("rb") as handle:
            uploaded = client.post(
                "/upload", files={"file": (source.name, handle, "application/octet-stream")}
            )
        if uploaded.status_code not in (200, 202):  # 202 since uploads queue asynchronously
            raise RemoteError(_detail(uploaded))
        job = _follow(client, uploaded.json()["job_id"], bars, task)
        if job["status"] != "done":
            raise RemoteError(str(job["error"]))
        _download(client, str(job["mp3_fid"]), output)
    except (RemoteError, httpx.HTTPError, OSError) as exc:
        bars.update(task, description=f"{source.name} [red]failed")
        return Outcome(source, output, error=str(exc))
    duration = float(str(job.get("duration") or 0.0))
    warning = str(job["warning"]) if job.get("warning") else None
    bars.update(task, completed=1, total=1)
    return Outcome(source, output, seconds=duration, output_bytes=output.stat().st_size, warning=warning)


def _follow(client: httpx.Client, job_id: str, bars: Progress, task: TaskID) -> dict[str, object]:
    """Read the job's server-sent events until it ends; the last state."""
    job: dict[str, object] = {}
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events") as events:
        for line in events.iter_lines():
            if line.startswith("data:"):
                job = json.loads(line[5:])
                bars.update(task, completed=float(job.get("progress") or 0), total=1)  # type: ignore[arg-type]
    if not job:
        raise RemoteError("the server sent no progress for the job")
    return job


def _download(client: httpx.Client, fid: str, output: Path) -> None:
    partial = output.with_name(f".{output.name}.part")
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with client.stream("GET", "/download", params={"fid": fid}) as response:
            if response.status_code != 200:
                raise RemoteError(f"download failed ({response.status_code})")
            with partial.open("wb") as handle:
                for chunk in response.iter_bytes(1 << 20):
                    handle.write(chunk)
        partial.replace(output)
    finally:
        partial.unlink(missing_ok=True)


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
