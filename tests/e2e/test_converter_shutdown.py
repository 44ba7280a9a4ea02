"""A converter receiving SIGTERM finishes its job within the grace period, or hands it back."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

from alchemist import jobs
from alchemist.db.engine import build_engine, transaction
from alchemist.db.models import Job
from alchemist.messaging.messages import VideoUploaded
from alchemist.messaging.rabbitmq import RabbitMQBroker
from alchemist.storage.files import FileStore
from tests.e2e.conftest import alchemist, delete_queues, free_port, rabbitmq_reachable
from tests.e2e.stack import Worker, start_worker
from tests.e2e.test_pipeline import long_audio

pytestmark = pytest.mark.rabbitmq
AMQP = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass
class Setup:
    env: dict[str, str]
    database_url: str
    tmp: Path

    def job(self, job_id: str) -> Job:
        engine = build_engine(make_url(self.database_url))
        try:
            with transaction(sessionmaker(engine, expire_on_commit=False)) as session:
                found = jobs.get_job(session, job_id)
                assert found is not None
                return found
        finally:
            engine.dispose()

    def depth(self, queue: str) -> int:
        async def count() -> int:
            broker = RabbitMQBroker(AMQP)
            await broker.connect()
            try:
                return await broker.depth(queue)
            finally:
                await broker.close()

        return asyncio.run(count())

    def converter(self, grace: float, name: str) -> Worker:
        args = ["converter", "--grace", str(grace), "--health-port", str(free_port())]
        return start_worker(args, self.env, self.tmp / f"{name}.log", "converter consuming")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    rabbitmq_reachable()
    run = secrets.token_hex(4)
    database_url = f"sqlite+pysqlite:///{tmp_path / 'jobs.db'}"
    env = {
        **os.environ, "ALCHEMIST_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": database_url,
        "AMQP_URL": AMQP, "VIDEO_QUEUE": f"term.{run}.video", "MP3_QUEUE": f"term.{run}.mp3",
    }  # fmt: skip
    assert alchemist("migrate", env=env).returncode == 0
    try:
        yield Setup(env, database_url, tmp_path)
    finally:
        delete_queues(AMQP, env["VIDEO_QUEUE"], env["MP3_QUEUE"])


def enqueue_long_job(setup: Setup) -> str:
    source = long_audio(setup.tmp / "long.ogg", 1200)
    with source.open("rb") as handle:
        blob = FileStore(Path(setup.env["ALCHEMIST_DATA_DIR"]) / "videos").put(
            handle, filename="long.ogg", content_type="audio/ogg"
        )
    engine = build_engine(make_url(setup.database_url))
    with transaction(sessionmaker(engine, expire_on_commit=False)) as session:
        job = jobs.create_job(session, owner="ann@example.com", filename="long.ogg",
                              video_fid=blob.id, video_bytes=blob.size)  # fmt: skip
    engine.dispose()
    message = VideoUploaded(job_id=job.id, video_fid=blob.id, username="ann@example.com")

    async def publish() -> None:
        broker = RabbitMQBroker(AMQP)
        await broker.connect()
        await broker.publish(setup.env["VIDEO_QUEUE"], message.to_body(), message_id=job.id)
        await broker.close()

    asyncio.run(publish())
    return job.id


def wait_for_text(worker: Worker, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in worker.text():
        assert time.monotonic() < deadline, worker.text()
        time.sleep(0.05)


def test_sigterm_with_time_to_spare_finishes_the_job(setup: Setup) -> None:
    job_id = enqueue_long_job(setup)
    worker = setup.converter(grace=120, name="patient")
    wait_for_text(worker, f"converting job {job_id}")
    worker.process.send_signal(signal.SIGTERM)
    assert worker.process.wait(120) == 0
    assert "finishing the jobs in hand" in worker.text()
    assert setup.job(job_id).status == "done"
    assert setup.depth(setup.env["VIDEO_QUEUE"]) == 0
    assert setup.depth(setup.env["MP3_QUEUE"]) == 1


def test_sigterm_past_the_grace_period_hands_the_job_back(setup: Setup) -> None:
    job_id = enqueue_long_job(setup)
    hasty = setup.converter(grace=0.5, name="hasty")
    wait_for_text(hasty, f"converting job {job_id}")
    started = time.monotonic()
    hasty.process.send_signal(signal.SIGTERM)
    assert hasty.process.wait(30) == 0
    assert time.monotonic() - started < 15
    assert setup.job(job_id).status == "converting"
    assert setup.depth(setup.env["VIDEO_QUEUE"]) == 1  # back in the queue, not lost
    successor = setup.converter(grace=120, name="successor")
    try:
        deadline = time.monotonic() + 120
        while setup.job(job_id).status != "done":
            assert time.monotonic() < deadline, successor.text()
            time.sleep(0.2)
        assert setup.job(job_id).attempts == 2
    finally:
        successor.process.terminate()
        successor.process.wait(60)
