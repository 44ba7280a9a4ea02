"""The whole system as separate processes on MariaDB, RabbitMQ and a real SMTP server,
driven with the seeds' curl session; then the same through `alchemist up`."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest

from alchemist.converter.ffmpeg import ffmpeg_executable
from tests.e2e.conftest import ANN, BOB, UPLOAD_LIMIT, free_port, running
from tests.e2e.stack import Stack, curl, curl_json, fid_in, stored_blobs
from tests.media import decode, write_media

pytestmark = [pytest.mark.mariadb, pytest.mark.rabbitmq]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 s H.264 + AAC video."""
    return write_media(tmp_path_factory.mktemp("media") / "video.mp4", seconds=3)


def test_the_seeds_curl_session_works_unchanged(distributed: Stack, clip: Path, tmp_path: Path) -> None:
    token = distributed.login(*ANN)
    uploaded = distributed.upload(token, clip)
    assert uploaded["status"] == "queued"
    assert distributed.mail is not None
    message = distributed.mail.wait_for_job(str(uploaded["job_id"]))
    assert message["To"] == ANN[0]
    fid = fid_in(message)
    song = tmp_path / "song.mp3"
    done = curl("--output", str(song), "-X", "GET", "-H", f"Authorization: Bearer {token}",
                f"{distributed.url}/download?fid={fid}")  # fmt: skip
    assert done.returncode == 0
    decoded = decode(song)
    assert decoded.codec.startswith("mp3")
    assert abs(decoded.duration - decode(clip).duration) < 0.1
    assert len(distributed.mail.for_job(str(uploaded["job_id"]))) == 1


def test_another_user_sees_nothing_of_it(distributed: Stack, clip: Path) -> None:
    ann, bob = distributed.login(*ANN), distributed.login(*BOB)
    job_id = str(distributed.upload(ann, clip)["job_id"])
    job = distributed.wait_until_finished(ann, job_id)
    as_bob = ["-H", f"Authorization: Bearer {bob}"]
    assert curl_json(*as_bob, f"{distributed.url}/api/v1/jobs")["jobs"] == []
    for args in (
        [f"{distributed.url}/api/v1/jobs/{job_id}"],
        [f"{distributed.url}/download?fid={job['mp3_fid']}"],
        ["-X", "DELETE", f"{distributed.url}/api/v1/jobs/{job_id}"],
    ):
        status = curl("-o", "/dev/null", "-w", "%{http_code}", *as_bob, *args).stdout
        assert status == "404", args
    assert distributed.job(ann, job_id)["status"] == "done"
    gone = curl("-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE", "-H", f"Authorization: Bearer {ann}",
                f"{distributed.url}/api/v1/jobs/{job_id}").stdout  # fmt: skip
    assert gone == "204"
    assert job["video_fid"] not in stored_blobs(distributed.data_dir / "videos")
    assert job["mp3_fid"] not in stored_blobs(distributed.data_dir / "mp3s")


def upload_status(stack: Stack, token: str, *form: str) -> tuple[str, str]:
    done = curl("-X", "POST", *form, "-H", f"Authorization: Bearer {token}", "-w", "\n%{http_code}",
                f"{stack.url}/upload")  # fmt: skip
    body, _, status = done.stdout.rpartition("\n")
    return status, body


def test_bad_uploads_get_precise_errors_and_leave_nothing_behind(
    distributed: Stack, clip: Path, tmp_path: Path
) -> None:
    token = distributed.login(*ANN)
    videos_before = stored_blobs(distributed.data_dir / "videos")
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(UPLOAD_LIMIT + 1))
    rejected = {
        "no file": (("-F", "note=hello"), "400", "no file"),
        "two files": (("-F", f"file=@{clip}", "-F", f"file=@{clip}"), "400", "exactly one file"),
        "empty": (("-F", f"file=@{empty}",), "400", "the file is empty"),
        "too large": (("-F", f"file=@{big}",), "413", f"limit of {UPLOAD_LIMIT} bytes"),
    }  # fmt: skip
    for name, (form, status, detail) in rejected.items():
        got, body = upload_status(distributed, token, *form)
        assert got == status, (name, body)
        assert detail in body, (name, body)
    assert stored_blobs(distributed.data_dir / "videos") == videos_before

    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    silent = write_media(tmp_path / "silent.mp4", audio=())
    whole = write_media(tmp_path / "whole.mp4", seconds=4, video=None, faststart=True)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])
    expected = {text: "not a media file", silent: "no audio track", truncated: "truncated"}
    for path, reason in expected.items():
        job_id = str(distributed.upload(token, path)["job_id"])
        job = distributed.wait_until_finished(token, job_id)
        said = str(job["error"] if job["status"] == "failed" else job["warning"])
        assert reason in said, job
        assert distributed.mail is not None
        distributed.mail.wait_for_job(job_id)
    listed = curl_json("-H", f"Authorization: Bearer {token}", f"{distributed.url}/api/v1/jobs")["jobs"]
    referenced = {j["video_fid"] for j in listed if j["video_fid"]} | {
        j["mp3_fid"] for j in listed if j["mp3_fid"]
    }  # type: ignore[index]
    on_disk = stored_blobs(distributed.data_dir / "videos") | stored_blobs(distributed.data_dir / "mp3s")
    assert on_disk == referenced  # every stored file belongs to a job
    # Sources go once their job has ended (KEEP_VIDEOS is off by default).
    assert not any(j["video_fid"] for j in listed if j["status"] in ("done", "failed"))  # type: ignore[index]


def test_an_authorised_request_costs_no_round_trip_to_auth(distributed: Stack) -> None:
    token = distributed.login(*ANN)
    assert distributed.auth_process is not None
    os.kill(distributed.auth_process.pid, signal.SIGSTOP)  # auth can answer nothing now
    try:
        listed = httpx.get(f"{distributed.url}/api/v1/jobs", headers={"Authorization": f"Bearer {token}"},
                           timeout=5)  # fmt: skip
        forged = httpx.get(
            f"{distributed.url}/api/v1/jobs", headers={"Authorization": "Bearer a.b.c"}, timeout=5
        )
    finally:
        os.kill(distributed.auth_process.pid, signal.SIGCONT)
    assert listed.status_code == 200
    assert "jobs" in listed.json()
    assert forged.status_code == 403


def long_audio(path: Path, seconds: int) -> Path:
    subprocess.run(
        [ffmpeg_executable(), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"sine=frequency=330:sample_rate=48000:duration={seconds}", "-ac", "2",
         "-c:a", "libopus", "-b:a", "16k", str(path)],
        check=True,
    )  # fmt: skip
    return path


def test_a_converter_killed_mid_conversion_still_yields_one_mp3_and_one_email(
    distributed: Stack, tmp_path: Path
) -> None:
    token = distributed.login(*ANN)
    source = long_audio(tmp_path / "long.ogg", 1200)
    mp3s_before = stored_blobs(distributed.data_dir / "mp3s")
    job_id = str(distributed.upload(token, source)["job_id"])
    deadline = time.monotonic() + 60
    victim = None
    while victim is None and time.monotonic() < deadline:
        for name in ("converter-1", "converter-2"):
            if f"converting job {job_id}" in distributed.workers[name].text():
                victim = name
        time.sleep(0.05)
    assert victim is not None, "no converter started the job"
    time.sleep(0.5)
    assert distributed.job(token, job_id)["status"] == "converting"
    children = psutil.Process(distributed.workers[victim].process.pid).children(recursive=True)
    assert any("ffmpeg" in child.name() for child in children)
    distributed.workers[victim].process.send_signal(signal.SIGKILL)
    distributed.workers[victim].process.wait()
    # Its ffmpeg and reader children die with it: nothing keeps converting for nobody.
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
    job = distributed.wait_until_finished(token, job_id, timeout=180)
    assert job["status"] == "done", job
    assert job["attempts"] == 2
    assert distributed.mail is not None
    distributed.mail.wait_for_job(job_id)
    time.sleep(1)
    assert len(distributed.mail.for_job(job_id)) == 1
    assert stored_blobs(distributed.data_dir / "mp3s") - mp3s_before == {job["mp3_fid"]}
    song = tmp_path / "song.mp3"
    curl("--output", str(song), "-H", f"Authorization: Bearer {token}",
         f"{distributed.url}/download?fid={job['mp3_fid']}")  # fmt: skip
    assert abs(decode(song).duration - 1200) < 0.2


def test_the_same_session_through_alchemist_up(clip: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MYSQL_", "JWT_", "SMTP_", "AMQP"))}
    env["ALCHEMIST_DATA_DIR"] = str(tmp_path / "data")
    url = f"http://127.0.0.1:{port}"
    args = ["up", "--host", "127.0.0.1", "--port", str(port)]
    with running(args, env, f"{url}/readyz", tmp_path / "up.log"):
        log = (tmp_path / "up.log").read_text()
        password = log.split("with password ")[1].split()[0]
        stack = Stack(url, env, tmp_path / "data", None)
        token = stack.login("admin@alchemist.local", password)
        uploaded = stack.upload(token, clip)
        job = stack.wait_until_finished(token, str(uploaded["job_id"]))
        outbox = tmp_path / "data" / "outbox"
        deadline = time.monotonic() + 30
        while not list(outbox.glob("*.eml")) and time.monotonic() < deadline:
            time.sleep(0.1)
        (eml,) = outbox.glob("*.eml")
        assert f"fid: {job['mp3_fid']}" in eml.read_text()
        song = tmp_path / "song.mp3"
        curl("--output", str(song), "-X", "GET", "-H", f"Authorization: Bearer {token}",
             f"{url}/download?fid={job['mp3_fid']}")  # fmt: skip
        assert abs(decode(song).duration - decode(clip).duration) < 0.1
    assert "created admin admin@alchemist.local" in log
