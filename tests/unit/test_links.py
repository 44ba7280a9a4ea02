"""Signed download links: tied to one job's output, expiring, stable while shown."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from alchemist.links import EXPIRY_GRANULARITY, DownloadLinks, LinkError

SECRET = "s" * 48
NOW = 1_800_000_000.0


def links_at(moment: float, ttl: int = 7 * 86_400) -> DownloadLinks:
    return DownloadLinks(SECRET, ttl, clock=lambda: moment)


def parts(url: str) -> tuple[int, str]:
    query = parse_qs(urlsplit(url).query)
    return int(query["expires"][0]), query["signature"][0]


def test_a_fresh_link_verifies_and_points_at_the_job() -> None:
    url = links_at(NOW).url("https://mp3.example.com/", "job1", "fid1")
    assert url.startswith("https://mp3.example.com/api/v1/jobs/job1/download?expires=")
    expires, signature = parts(url)
    links_at(NOW).check("job1", "fid1", expires, signature)


def test_the_link_lives_its_ttl_rounded_up_to_the_hour_then_expires() -> None:
    expires, signature = parts(links_at(NOW, ttl=3600).url("http://h", "job1", "fid1"))
    assert NOW + 3600 <= expires < NOW + 3600 + EXPIRY_GRANULARITY
    links_at(expires).check("job1", "fid1", expires, signature)  # the last second still counts
    with pytest.raises(LinkError, match="expired"):
        links_at(expires + 1).check("job1", "fid1", expires, signature)


def test_the_link_is_stable_within_the_hour_so_a_live_page_does_not_churn() -> None:
    start = (NOW // EXPIRY_GRANULARITY) * EXPIRY_GRANULARITY + 1
    urls = {links_at(start + offset).url("http://h", "j", "f") for offset in (0, 60, 1800, 3598)}
    assert len(urls) == 1


@pytest.mark.parametrize(
    ("job", "fid", "shift", "secret"),
    [
        ("job2", "fid1", 0, SECRET),  # another job
        ("job1", "fid2", 0, SECRET),  # the output was replaced
        ("job1", "fid1", 3600, SECRET),  # a longer life
        ("job1", "fid1", 0, "t" * 48),  # another deployment's key
    ],
)
def test_a_link_for_anything_else_is_refused(job: str, fid: str, shift: int, secret: str) -> None:
    expires, signature = parts(links_at(NOW).url("http://h", "job1", "fid1"))
    checker = DownloadLinks(secret, 3600, clock=lambda: NOW)
    with pytest.raises(LinkError, match="not valid"):
        checker.check(job, fid, expires + shift, signature)


@pytest.mark.parametrize("signature", ["", "x", "é" * 64, "0" * 64, "\x00" * 64])
def test_garbage_signatures_are_refused_not_crashed_on(signature: str) -> None:
    with pytest.raises(LinkError):
        links_at(NOW).check("job1", "fid1", int(NOW) + 60, signature)


def test_job_ids_are_quoted_into_the_path() -> None:
    url = links_at(NOW).url("http://h", "a/b?c", "f")
    assert "/api/v1/jobs/a%2Fb%3Fc/download?" in url
