"""`alchemist storage check [--fix]`: blobs that belong to no job, and writes that never finished."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone

from alchemist.config import Settings


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `storage check`."""
    storage = commands.add_parser("storage", help="audit stored files")
    verbs = storage.add_subparsers(dest="verb", required=True, metavar="VERB")
    check = verbs.add_parser(
        "check",
        help="report blobs no job refers to (and partial writes); --fix removes them",
        description="Example: alchemist storage check --fix --min-age 3600",
    )
    check.add_argument("--fix", action="store_true", help="delete what is reported")
    check.add_argument(
        "--min-age", type=float, default=None, metavar="SECONDS",
        help="only blobs older than this (default ORPHAN_MIN_AGE_SECONDS, 3600; newer may be in flight)",
    )  # fmt: skip
    check.set_defaults(run=run_check)


def run_check(args: argparse.Namespace) -> int:
    """Print one line per orphan and a summary; exit 1 when something was found and not fixed."""
    from alchemist.sweeper import audit_storage
    from alchemist.wiring import build_blob_stores, build_database

    settings = Settings()
    engine, sessions = build_database(settings)
    videos, outputs, closers = build_blob_stores(settings)
    min_age = settings.ORPHAN_MIN_AGE_SECONDS if args.min_age is None else args.min_age
    try:
        older_than = datetime.now(timezone.utc) - timedelta(seconds=min_age)
        audit = audit_storage(sessions, videos, outputs, older_than, fix=args.fix)
    finally:
        for close in closers:
            close()
        engine.dispose()
    verb = "deleted" if args.fix else "orphan"
    for orphan in audit.orphans:
        print(f"{verb}\t{orphan.store}\t{orphan.blob.id}\t{orphan.blob.size}\t{orphan.blob.filename}")
    total = sum(orphan.blob.size for orphan in audit.orphans)
    print(
        f"{len(audit.orphans)} orphan blobs ({total} bytes), {audit.partial} partial writes"
        + (" removed" if args.fix else "; run with --fix to remove them")
    )
    return 0 if args.fix or not (audit.orphans or audit.partial) else 1
