"""The email channel: the message that tells an owner how their job ended."""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from urllib.parse import quote, urlsplit

from alchemist.config import Settings
from alchemist.db.models import Job, JobStatus
from alchemist.links import DownloadLinks
from alchemist.notification.mail import MailSender


def download_url(settings: Settings, job: Job) -> str | None:
    """The signed link to a done job's output that works in a browser with no header."""
    if job.status != JobStatus.DONE or not job.mp3_fid:
        return None
    links = DownloadLinks(settings.jwt_secret(), settings.DOWNLOAD_LINK_TTL_SECONDS)
    return links.url(settings.PUBLIC_URL, job.id, job.mp3_fid)


@dataclass
class EmailChannel:
    """Builds the email and hands it to the configured sender (SMTP or the outbox dir)."""

    settings: Settings
    sender: MailSender

    def send(self, job: Job) -> None:
        """Deliver the email for this job or raise."""
        self.sender.send(self.message_for(job))

    def message_for(self, job: Job) -> EmailMessage:
        """The email; its Message-ID is derived from the job, so a duplicate is recognisable."""
        settings = self.settings
        message = EmailMessage()
        message["From"] = settings.SMTP_FROM
        message["To"] = job.owner
        message["Date"] = formatdate(usegmt=True)
        domain = urlsplit(settings.PUBLIC_URL).hostname or "audio-alchemist.invalid"
        message["Message-ID"] = f"<job-{job.id}@{domain}>"
        message["X-Alchemist-Job"] = job.id
        if job.status == JobStatus.DONE:
            seeds_link = f"{settings.PUBLIC_URL.rstrip('/')}/download?fid={quote(job.mp3_fid or '')}"
            days = max(1, settings.DOWNLOAD_LINK_TTL_SECONDS // 86_400)
            message["Subject"] = f"Your MP3 is ready: {job.filename}"
            message.set_content(
                f"Your MP3 of {job.filename} is ready.\n\n"
                f"Download it (the link works for {days} days, or until you delete the job):\n"
                f"{download_url(settings, job)}\n\n"
                f"fid: {job.mp3_fid}\n"
                f'curl --output song.mp3 -X GET -H "Authorization: Bearer $JWT" "{seeds_link}"\n'
                + (f"\nNote: {job.warning}\n" if job.warning else ""),
                cte="8bit",
            )
        else:
            message["Subject"] = f"Conversion failed: {job.filename}"
            message.set_content(f"We could not convert {job.filename}.\n\nReason: {job.error}\n", cte="8bit")
        return message
