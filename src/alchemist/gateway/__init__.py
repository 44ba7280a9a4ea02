"""The gateway service: the only public entry point (login, upload, download, jobs API)."""
