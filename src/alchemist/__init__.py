"""Audio Alchemist: turn videos into MP3s."""

__version__ = "0.1.0"
