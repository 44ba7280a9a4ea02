"""The containers we accept and the only protocol a media file may use."""

from __future__ import annotations

# Demuxers a video or audio upload may come in. Playlist and reference formats (hls, dash,
# concat, image2, tee...) are left out on purpose: they open other files or URLs.
ALLOWED_DEMUXERS = (
    "mov",  # mov, mp4, m4a, 3gp
    "matroska",  # mkv, webm
    "avi",
    "flv",
    "mpegts",
    "mpeg",
    "asf",  # wmv, wma
    "ogg",
    "mp3",
    "wav",
    "aac",
    "flac",
)
FORMAT_WHITELIST = ",".join(ALLOWED_DEMUXERS)
PROTOCOL_WHITELIST = "file"
