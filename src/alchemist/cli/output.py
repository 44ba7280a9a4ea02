"""What `alchemist convert` shows: progress bars, a summary table, per-file outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table


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


def progress_bars(console: Console) -> Progress:
    """One bar per file, on stderr."""
    return Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(), console=console, transient=False,
    )  # fmt: skip


def refusal(source: Path, output: Path, force: bool) -> str | None:
    """Why this file must not be converted to this output, if it must not."""
    if not source.is_file():
        return "no such file"
    if output.resolve() == source.resolve():
        return "the MP3 would replace the input; choose another --output-dir"
    if output.exists() and not force:
        return f"{output} exists (use --force to overwrite)"
    return None


def summary(outcomes: list[Outcome]) -> None:
    """The table of every file: in, out, duration, speed, note."""
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
