"""The notification service: tells users their MP3 is ready (email, webhook)."""
