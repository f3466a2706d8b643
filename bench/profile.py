"""Where the gateway spends its time on ``POST /cache/new``: py-spy on the running gateway.

``python -m bench --profile`` records the stack's gateway process with py-spy (sampling, from
outside: the gateway runs unchanged) while a load of ``POST /cache/new`` runs, and writes the
functions that were on the CPU most often, by their own samples and with what they called.
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from pathlib import Path

#: Samples per second py-spy takes.
RATE = 250
#: How many functions each list shows.
TOP = 25


def py_spy() -> Path:
    """The py-spy installed beside this interpreter (the ``bench`` extra)."""
    return Path(sys.executable).parent / "py-spy"


async def record(pid: int, seconds: float, raw_path: Path, *, subprocesses: bool = False) -> None:
    """Sample process ``pid`` (and its children) for ``seconds`` into ``raw_path`` (collapsed)."""
    process = await asyncio.create_subprocess_exec(
        str(py_spy()),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(round(seconds)),
        "--rate",
        str(RATE),
        "--format",
        "raw",
        "--output",
        str(raw_path),
        "--nonblocking",
        *(["--subprocesses"] if subprocesses else []),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate()
    if process.returncode != 0:
        msg = f"py-spy failed: {err.decode(errors='replace')[-500:]}"
        raise RuntimeError(msg)


def _frame(frame: str) -> str:
    """``handle (litestar/routes/http.py:123)`` → ``handle (litestar/routes/http.py)``."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "python3.11/", "services/", "shared/"):
        if marker in path:
            path = (
                path.split(marker, 1)[1]
                if marker != "shared/"
                else "shared/" + path.split(marker, 1)[1]
            )
            break
    return f"{name} ({path})" if path else name


def summarise(raw_path: Path) -> list[str]:
    """The top functions by own samples and by total samples (with callees), as text lines."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(frame) for frame in stack.split(";")]
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [f"{samples} samples at {RATE}/s", "", f"Top {TOP} by own time (on the CPU itself):"]
    lines += [f"{100 * n / samples:6.1f} %  {frame}" for frame, n in own.most_common(TOP)]
    lines += ["", f"Top {TOP} by total time (itself and what it called):"]
    lines += [f"{100 * n / samples:6.1f} %  {frame}" for frame, n in total.most_common(TOP)]
    return lines
