"""`alchemist convert VIDEO...`: convert local files with the engine, several at once."""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from alchemist.cli.output import Outcome, progress_bars, refusal, summary
from alchemist.cli.remote import run_remote
from alchemist.converter.engine import ConversionEngine
from alchemist.converter.errors import ConversionError
from alchemist.converter.options import ConversionOptions, InvalidOptionsError


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the convert subcommand."""
    convert = commands.add_parser("convert", help="convert local videos to MP3")
    convert.add_argument("videos", nargs="+", type=Path, metavar="VIDEO")
    convert.add_argument("-o", "--output-dir", type=Path, help="where MP3s go (default: beside each video)")
    convert.add_argument("--bitrate", default="192k", help="CBR bitrate (default 192k)")
    convert.add_argument("--vbr", type=int, metavar="Q", help="VBR quality 0 (best) to 9 instead of CBR")
    convert.add_argument("--sample-rate", type=int, help="output sample rate in Hz")
    convert.add_argument("--mono", action="store_true", help="mix down to one channel")
    convert.add_argument("--start", type=float, help="start at this second")
    convert.add_argument("--end", type=float, help="stop at this second")
    convert.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="conversions at once (default: one per core)",
    )
    convert.add_argument("--force", action="store_true", help="overwrite existing MP3s")
    convert.add_argument("--server", metavar="URL", help="convert on an Audio Alchemist server instead")
    convert.add_argument("--user", help="email to log in with (--server; or ALCHEMIST_USER)")
    convert.set_defaults(run=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    """Convert every file; exit 1 when any failed, with one line per failure."""
    console = Console(stderr=True)
    try:
        options = ConversionOptions(
            bitrate=args.bitrate, vbr_quality=args.vbr, sample_rate=args.sample_rate,
            mono=args.mono, start=args.start, end=args.end,
        )  # fmt: skip
    except InvalidOptionsError as exc:
        console.print(f"alchemist convert: {exc}")
        return 2
    targets = _plan(args.videos, args.output_dir)
    if args.server:
        return run_remote(args, targets)
    engine = ConversionEngine()
    try:
        with progress_bars(console) as progress, ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = [
                pool.submit(_convert_one, engine, source, output, options, args.force, progress)
                for source, output in targets
            ]
            outcomes = [future.result() for future in futures]
    finally:
        engine.close()
    summary(outcomes)
    failed = [o for o in outcomes if o.error]
    for outcome in failed:
        print(f"failed: {outcome.source}: {outcome.error}", file=sys.stderr)
    return 1 if failed else 0


def _plan(videos: list[Path], output_dir: Path | None) -> list[tuple[Path, Path]]:
    return [(video, (output_dir or video.parent) / f"{video.stem}.mp3") for video in videos]


def _convert_one(
    engine: ConversionEngine,
    source: Path,
    output: Path,
    options: ConversionOptions,
    force: bool,
    progress: Progress,
) -> Outcome:
    task = progress.add_task(source.name, total=None)
    reason = refusal(source, output, force)
    if reason:
        progress.update(task, description=f"{source.name} [red]skipped")
        return Outcome(source, output, error=reason)
    started = time.monotonic()

    def report(done: float, total: float | None) -> None:
        progress.update(task, completed=done, total=total)

    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        result = engine.convert(source, output, options, progress=report)
    except (ConversionError, OSError) as exc:
        progress.update(task, description=f"{source.name} [red]failed")
        return Outcome(source, output, error=str(exc))
    progress.update(task, completed=result.duration, total=result.duration or 1)
    return Outcome(
        source, output, seconds=result.duration, elapsed=time.monotonic() - started,
        output_bytes=result.output_bytes, warning=result.warning,
    )  # fmt: skip
