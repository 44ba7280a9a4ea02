"""Run one ffmpeg child under CPU, memory, output-size and wall-clock limits."""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from alchemist.converter.errors import ConversionFailedError, ResourceLimitError

STDERR_KEEP = 8192


@dataclass(frozen=True)
class ChildLimits:
    """Limits for one child process."""

    cpu_seconds: int
    memory_bytes: int
    output_bytes: int
    wall_seconds: float


@dataclass(frozen=True)
class ChildOutcome:
    """How the child ended: the last progress position (seconds) and its error output."""

    seconds_done: float
    stderr: str


def run_ffmpeg(
    command: list[str],
    limits: ChildLimits,
    on_progress: Callable[[float], None] | None = None,
) -> ChildOutcome:
    """Run ffmpeg in its own process group; raise a ConversionError when it fails."""
    process = subprocess.Popen(
        [*_die_with_parent(), *command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    # Set from outside (prlimit) rather than preexec_fn, which is unsafe in threaded callers.
    resource.prlimit(process.pid, resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
    resource.prlimit(process.pid, resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (limits.output_bytes, limits.output_bytes))
    resource.prlimit(process.pid, resource.RLIMIT_CORE, (0, 0))
    try:
        seconds_done, stderr, timed_out = _pump(process, limits.wall_seconds, on_progress)
    finally:
        _kill_group(process)
    return _outcome(process.returncode, seconds_done, stderr, timed_out, limits)


@functools.cache
def _die_with_parent() -> tuple[str, ...]:
    """A prefix that makes the child die with us (util-linux setpriv), where there is one.

    Without it, a worker killed with SIGKILL would leave its ffmpeg running to the end.
    """
    setpriv = shutil.which("setpriv")
    return (setpriv, "--pdeathsig", "KILL", "--") if setpriv else ()


def _pump(
    process: subprocess.Popen[bytes],
    wall_seconds: float,
    on_progress: Callable[[float], None] | None,
) -> tuple[float, str, bool]:
    assert process.stdout is not None and process.stderr is not None
    deadline = time.monotonic() + wall_seconds
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ, "progress")
    selector.register(process.stderr, selectors.EVENT_READ, "stderr")
    pending, stderr, seconds_done = b"", b"", 0.0
    open_streams = 2
    while open_streams:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return seconds_done, stderr.decode(errors="replace"), True
        for key, _ in selector.select(remaining):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                selector.unregister(key.fileobj)
                open_streams -= 1
            elif key.data == "stderr":
                stderr = (stderr + chunk)[-STDERR_KEEP:]
            else:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.startswith(b"out_time_us=") and line[12:].strip().isdigit():
                        seconds_done = int(line[12:]) / 1_000_000
                        if on_progress is not None:
                            on_progress(seconds_done)
    selector.close()
    process.wait(max(0.1, deadline - time.monotonic()))
    return seconds_done, stderr.decode(errors="replace"), False


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def _outcome(
    returncode: int, seconds_done: float, stderr: str, timed_out: bool, limits: ChildLimits
) -> ChildOutcome:
    if timed_out:
        raise ResourceLimitError(f"conversion took longer than {limits.wall_seconds:.0f} s")
    if returncode == -signal.SIGXCPU or (returncode == -signal.SIGKILL and not stderr):
        raise ResourceLimitError(f"conversion used more than {limits.cpu_seconds} s of CPU")
    if returncode == -signal.SIGXFSZ:
        raise ResourceLimitError(f"the MP3 would be larger than {limits.output_bytes} bytes")
    if returncode != 0:
        reason = _last_lines(stderr) or f"ffmpeg exited with status {returncode}"
        if "Cannot allocate memory" in stderr or returncode == -signal.SIGSEGV:
            reason += " (memory limit or crash)"
        raise ConversionFailedError(f"conversion failed: {reason}")
    return ChildOutcome(seconds_done=seconds_done, stderr=stderr)


def _last_lines(stderr: str, count: int = 3) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    return "; ".join(lines[-count:])
