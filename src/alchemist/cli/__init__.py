"""The `alchemist` command line: starts services and administers users."""
