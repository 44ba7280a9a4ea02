"""Benchmark the conversion engine against ffmpeg's own command line (and the seeds' moviepy).

Run: .venv/bin/python bench/convert.py [--rounds 5]
Clips (60 s and 600 s, 720p H.264 + AAC) are generated once into ~/.cache/alchemist-bench.
Each round runs every approach once, alternating; the table shows medians, peak RSS of the
largest process of each approach, and the ratio to the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from alchemist.converter.engine import ConversionEngine
from alchemist.converter.ffmpeg import ffmpeg_executable

CACHE = Path(os.environ.get("ALCHEMIST_BENCH_CACHE", Path.home() / ".cache" / "alchemist-bench"))
CLIPS = {"60 s": 60, "600 s": 600}


def clip(seconds: int, audio: str = "aac") -> Path:
    """A 720p H.264 clip with a tone, made once with ffmpeg's test sources."""
    path = CACHE / f"clip-{seconds}s-{audio}.{'mp4' if audio == 'aac' else 'mkv'}"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"generating {path} ...", file=sys.stderr)
        partial = path.with_suffix(".part" + path.suffix)
        subprocess.run(
            [
                ffmpeg_executable(), "-nostdin", "-loglevel", "error", "-y",
                "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
                "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
                "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast",
                "-pix_fmt", "yuv420p", "-ac", "2",
                *(["-c:a", "aac", "-b:a", "128k"] if audio == "aac" else ["-c:a", "libmp3lame"]),
                "-movflags", "+faststart", "-f", "mp4" if audio == "aac" else "matroska",
                str(partial),
            ],
            check=True,
        )  # fmt: skip
        partial.rename(path)
    return path


def cpu_of_children() -> float:
    """CPU seconds of reaped children plus those still alive (the engine's reader)."""
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    alive = sum(sum(child.cpu_times()[:2]) for child in psutil.Process().children(recursive=True))
    return reaped.ru_utime + reaped.ru_stime + alive


def timed(run: Callable[[], None]) -> tuple[float, float]:
    """Wall and CPU seconds (this process and its children) of one run."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = cpu_of_children()
    start = time.perf_counter()
    run()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - own.ru_utime) + (after.ru_stime - own.ru_stime)
    return wall, cpu + cpu_of_children() - children


def cli_command(source: Path, out: Path, copy: bool) -> list[str]:
    codec = ["-c:a", "copy"] if copy else ["-c:a", "libmp3lame", "-b:a", "192k"]
    return [ffmpeg_executable(), "-nostdin", "-loglevel", "error", "-y", "-i", str(source),
            "-vn", *codec, str(out)]  # fmt: skip


def seeds_moviepy(source: Path, out: Path) -> None:
    """The seeds' approach: whole file in memory, a temp file, moviepy's write_audiofile."""
    from moviepy import VideoFileClip  # optional: pip install -e '.[bench]'

    data = source.read_bytes()
    with tempfile.NamedTemporaryFile(suffix=".mp4") as temp:
        temp.write(data)
        temp.flush()
        video = VideoFileClip(temp.name)
        video.audio.write_audiofile(str(out), bitrate="192k", logger=None)
        video.close()


def peak_rss_mb(approach: str, source: Path) -> float:
    """Peak RSS of the largest process of one run, measured in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, __file__, "--peak-rss", approach, str(source)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(json.loads(done.stdout)["peak_mb"])


def run_once_for_rss(approach: str, source: Path) -> None:
    with tempfile.TemporaryDirectory() as out_dir:
        out = Path(out_dir) / "out.mp3"
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if approach == "engine":
            engine = ConversionEngine()
            engine.convert(source, out)
            engine.close()
        elif approach == "cli":
            subprocess.run(cli_command(source, out, copy=False), check=True)
        else:
            seeds_moviepy(source, out)
        self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # For the engine and the CLI the converting process is a child; for moviepy it is us.
    own = self_peak if approach == "moviepy" else self_peak - before
    print(json.dumps({"peak_mb": max(own, child_peak) / 1024}))


def have_moviepy() -> bool:
    try:
        import moviepy  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--peak-rss", nargs=2, metavar=("APPROACH", "SOURCE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_rss:
        run_once_for_rss(args.peak_rss[0], Path(args.peak_rss[1]))
        return
    engine = ConversionEngine()
    approaches = ["engine", "cli"] + (["moviepy"] if have_moviepy() else [])
    rows: list[tuple[str, str, float, float, float, float]] = []
    with tempfile.TemporaryDirectory() as out_dir:
        out = Path(out_dir) / "out.mp3"
        engine.probe(clip(60))  # start the reader child once, as a worker does
        runs = {
            "engine": lambda source: engine.convert(source, out),
            "cli": lambda source: subprocess.run(cli_command(source, out, False), check=True),
            "moviepy": lambda source: seeds_moviepy(source, out),
        }
        for label, seconds in CLIPS.items():
            source = clip(seconds)
            samples: dict[str, list[tuple[float, float]]] = {a: [] for a in approaches}
            for _ in range(args.rounds):
                for approach in approaches:
                    samples[approach].append(timed(lambda a=approach, s=source: runs[a](s)))
            rss = {a: peak_rss_mb(a, source) for a in approaches}
            for approach in approaches:
                wall = statistics.median(s[0] for s in samples[approach])
                cpu = statistics.median(s[1] for s in samples[approach])
                rows.append((label, approach, wall, cpu, rss[approach], 0.0))
        mp3_source = clip(60, audio="mp3")
        copy_engine = [timed(lambda: engine.convert(mp3_source, out)) for _ in range(args.rounds)]
        copy_cli = [
            timed(lambda: subprocess.run(cli_command(mp3_source, out, False), check=True))
            for _ in range(args.rounds)
        ]
    engine.close()
    print(f"\n{'clip':7} {'approach':9} {'wall s':>8} {'cpu s':>8} {'peak MB':>8} "
          f"{'wall/cli':>9} {'cpu/cli':>8}")  # fmt: skip
    for label, approach, wall, cpu, rss_mb, _ in rows:
        base = next(r for r in rows if r[0] == label and r[1] == "cli")
        print(f"{label:7} {approach:9} {wall:8.3f} {cpu:8.3f} {rss_mb:8.1f} "
              f"{wall / base[2]:9.3f} {cpu / base[3]:8.3f}")  # fmt: skip
    copy_wall = statistics.median(s[0] for s in copy_engine)
    cli_wall = statistics.median(s[0] for s in copy_cli)
    print(
        f"\ncopy path (60 s clip whose audio is MP3): engine {copy_wall:.3f} s, "
        f"cli re-encoding {cli_wall:.3f} s, ratio {copy_wall / cli_wall:.3f}"
    )
    if not have_moviepy():
        print("(moviepy not installed: pip install -e '.[bench]' to include the seeds' approach)")


if __name__ == "__main__":
    main()
