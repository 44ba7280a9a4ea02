"""`alchemist convert VIDEO...`: convert local files with the engine, several at once."""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

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
    convert.set_defaults(run=run_convert)


@dataclass(frozen=True)
class Outcome:
    """One file's result: its output and duration, or why it failed."""

    source: Path
    output: Path
    seconds: float = 0.0
    elapsed: float = 0.0
    output_bytes: int = 0
    error: str | None = None
    warning: str | None = None


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
    engine = ConversionEngine()
    try:
        with _progress(console) as progress, ThreadPoolExecutor(max(1, args.jobs)) as pool:
            futures = [
                pool.submit(_convert_one, engine, source, output, options, args.force, progress)
                for source, output in targets
            ]
            outcomes = [future.result() for future in futures]
    finally:
        engine.close()
    _summary(outcomes)
    failed = [o for o in outcomes if o.error]
    for outcome in failed:
        print(f"failed: {outcome.source}: {outcome.error}", file=sys.stderr)
    return 1 if failed else 0


def _plan(videos: list[Path], output_dir: Path | None) -> list[tuple[Path, Path]]:
    return [(video, (output_dir or video.parent) / f"{video.stem}.mp3") for video in videos]


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(), console=console, transient=False,
    )  # fmt: skip


def _convert_one(
    engine: ConversionEngine,
    source: Path,
    output: Path,
    options: ConversionOptions,
    force: bool,
    progress: Progress,
) -> Outcome:
    task = progress.add_task(source.name, total=None)
    refusal = _refusal(source, output, force)
    if refusal:
        progress.update(task, description=f"{source.name} [red]skipped")
        return Outcome(source, output, error=refusal)
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


def _refusal(source: Path, output: Path, force: bool) -> str | None:
    if not source.is_file():
        return "no such file"
    if output.resolve() == source.resolve():
        return "the MP3 would replace the input; choose another --output-dir"
    if output.exists() and not force:
        return f"{output} exists (use --force to overwrite)"
    return None


def _summary(outcomes: list[Outcome]) -> None:
    table = Table(title="alchemist convert")
    for column in ("in", "out", "duration", "speed", "note"):
        table.add_column(column)
    for o in outcomes:
        if o.error:
            table.add_row(str(o.source), "—", "—", "—", f"[red]{o.error}")
            continue
        speed = f"{o.seconds / o.elapsed:.0f}x" if o.elapsed else "—"
        table.add_row(
            str(o.source), str(o.output), f"{o.seconds:.1f} s", speed, o.warning or "",
        )  # fmt: skip
    Console().print(table)
