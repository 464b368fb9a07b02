"""Sample the gateway with py-spy under load and say where its CPU time goes.

``py-spy record --format raw`` writes collapsed stacks (one line per distinct
stack: ``frame;frame;...;frame count``); `summarize` folds them into the top
functions by own time (self), the top areas (bridge modules, libraries, the
standard library) by own time, and the top bridge functions including what
they call (inclusive). Time in C extensions (lxml, orjson, httptools,
cryptography) counts as own time of the Python function that called them.

    python bench/profile.py PROFILE.raw      # print the summary of a recorded profile
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else None


def record(pid: int, seconds: int, out: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    """Start sampling `pid` for `seconds` in the background; wait on the handle."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed in the venv (make bench installs it)")
    argv = [exe, "record", "-p", str(pid), "-d", str(seconds), "-r", str(rate)]
    argv += ["-f", "raw", "--full-filenames", "--nonblocking", "-o", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def command(pid: str = "<gateway pid>", seconds: int = 10, out: str = "profile.raw") -> str:
    return f"py-spy record -p {pid} -d {seconds} -r 250 -f raw --full-filenames -o {out}"


def area(path: str, source: str) -> str:
    """A readable name for where a frame's code lives."""
    if path.startswith(source + "/bridge/") or ("/bridge/" in path and "site-packages" not in path):
        rel = path.split("/bridge/", 1)[1]
        return "bridge/" + rel
    if "site-packages/" in path:
        rel = path.split("site-packages/", 1)[1]
        top = rel.split("/", 1)[0].removesuffix(".py")
        return top
    if path.startswith("<frozen"):
        return "python (frozen)"
    match = re.search(r"/lib/python3\.\d+/(.+)$", path)
    if match:
        rel = match.group(1)
        return "stdlib " + rel.split("/", 1)[0].removesuffix(".py")
    return path


# Threads blocked on a queue, which py-spy on this VM does not always see as idle:
# (function, file ending) of the leaf frame where they wait for work.
_WAITING = (
    ("_connection_worker_thread", "aiosqlite/core.py"),  # aiosqlite's thread: tx.get()
    ("SqliteAppender._run", "bridge/store/appender.py"),  # the audit appender: queue.get()
)


def _waiting(frames: list[tuple[str, str, str]]) -> bool:
    func, file, _ = frames[-1]
    return any(func == f and file.endswith(end) for f, end in _WAITING)


def _parse(raw: Path) -> list[tuple[list[tuple[str, str, str]], int]]:
    """The stacks of a raw py-spy file, without those of threads waiting for work."""
    stacks = []
    for line in raw.read_text(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        frames_text, _, count = line.rpartition(" ")
        frames = []
        for frame in frames_text.split(";"):
            m = _FRAME.match(frame)
            if m:
                frames.append((m.group("func"), m.group("file"), m.group("line") or ""))
            else:
                frames.append((frame, "", ""))
        if frames and not _waiting(frames):
            stacks.append((frames, int(count)))
    return stacks


def summarize(raw: Path, source: Path, top: int = 15) -> dict[str, Any]:
    stacks = _parse(raw)
    total = sum(count for _, count in stacks) or 1
    src = str(source)
    by_func: Counter[str] = Counter()
    by_area: Counter[str] = Counter()
    by_line: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        func, file, line = frames[-1]
        where = area(file, src)
        by_func[f"{func} ({where})"] += count
        by_line[f"{func} ({where}:{line})"] += count
        # Areas: bridge files by module, everything else by package.
        by_area[where] += count
        seen: set[str] = set()
        for f, fl, _ in frames:
            w = area(fl, src)
            if w.startswith("bridge/"):
                key = f"{f} ({w})"
                if key not in seen:
                    seen.add(key)
                    inclusive[key] += count

    def share(counter: Counter[str], below: float = 101.0) -> list[dict[str, Any]]:
        rows = [
            {"name": name, "samples": n, "share": round(100 * n / total, 1)}
            for name, n in counter.most_common()
            if 100 * n / total < below
        ]
        return rows[:top]

    bridge_self = sum(n for name, n in by_area.items() if name.startswith("bridge/"))
    return {
        "samples": total,
        "self_functions": share(by_func),
        "self_areas": share(by_area),
        "self_lines": share(by_line),
        # Frames every sample passes through (the CLI, uvicorn's loop) say nothing.
        "inclusive_bridge": share(inclusive, below=99.0),
        "bridge_self_share": round(100 * bridge_self / total, 1),
    }


def markdown(summary: dict[str, Any], title: str) -> str:
    lines = [f"**{title}** ({summary['samples']} samples)", ""]
    lines += ["| own time | where (area) |", "|---:|---|"]
    lines += [f"| {r['share']}% | {r['name']} |" for r in summary["self_areas"][:12]]
    lines += ["", "| own time | function (area) |", "|---:|---|"]
    lines += [f"| {r['share']}% | `{r['name']}` |" for r in summary["self_functions"][:15]]
    lines += ["", "| own time | line (area:line) |", "|---:|---|"]
    lines += [f"| {r['share']}% | `{r['name']}` |" for r in summary["self_lines"][:15]]
    lines += ["", "| incl. time | bridge function (area) |", "|---:|---|"]
    lines += [f"| {r['share']}% | `{r['name']}` |" for r in summary["inclusive_bridge"][:12]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile", type=Path, help="a py-spy raw profile (--format raw)")
    parser.add_argument(
        "source", type=Path, nargs="?", help="the tree the gateway ran from (default: this one)"
    )
    args = parser.parse_args(argv)
    if not args.profile.is_file():
        parser.error(f"no profile at {args.profile}: record one with py-spy --format raw")
    source = args.source or Path(__file__).resolve().parent.parent
    summary = summarize(args.profile, source)
    print(markdown(summary, args.profile.name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
