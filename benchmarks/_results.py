"""benchmarks/RESULTS.md holds every measured table, one ``## section`` each, stamped with the commit,
the machine and the command that measured it. A benchmark script calls :func:`publish_tables` once:
the markdown tables it prints then replace its section when it ends without an error.
"""

from __future__ import annotations

import atexit
import datetime
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Measured results\n\n"
    "Every table is rewritten by the script that measures it (`benchmarks/`); each says the commit,\n"
    "the machine and the command. Medians unless a table says otherwise.\n"
)


def _commit() -> str:
    """The short hash of HEAD, ``+changes`` when the tree differs from it."""
    git = ["git", "-C", str(Path(__file__).resolve().parent.parent)]
    try:
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True)
    except OSError:
        return "unknown"
    if head.returncode:
        return "unknown"
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def machine() -> str:
    """CPU model, cores and memory, e.g. ``Intel Xeon … (x86_64), 2 cores, 24 GiB``."""
    model = platform.processor() or platform.machine()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M).group(1).strip()
        kib = int(re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M).group(1))
        memory = f", {kib / 2**20:.0f} GiB"
    except (OSError, AttributeError):
        memory = ""
    return f"{model} ({platform.machine()}), {os.cpu_count()} cores{memory}"


def stamp(command: str) -> str:
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    return f"_{today}, commit {_commit()}, {machine()}:_ `{command}`"


def write_section(name: str, body: str, command: str, path: Path | None = None) -> Path:
    """Replace the section ``## name`` of ``path`` (default RESULTS.md; or add it at the end) with
    ``body``, stamped."""
    path = path or RESULTS
    text = path.read_text(encoding="utf-8") if path.is_file() else HEADER
    block = f"## {name}\n\n{stamp(command)}\n\n{body.strip()}\n"
    section = re.compile(rf"^## {re.escape(name)}\n.*?(?=^## |\Z)", re.M | re.S)
    if section.search(text):
        text = section.sub(lambda _: block + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + block
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


class _TableTee:
    """Passes what is printed on, and keeps the lines of markdown tables (blocks apart)."""

    def __init__(self, stream):
        self.stream, self.lines, self._partial, self._in_table = stream, [], "", False

    def write(self, text: str) -> int:
        self._partial += text
        *complete, self._partial = self._partial.split("\n")
        for line in complete:
            is_row = line.startswith("|")
            if is_row and not self._in_table and self.lines:
                self.lines.append("")
            if is_row:
                self.lines.append(line)
            self._in_table = is_row
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name):
        return getattr(self.stream, name)


def publish_tables(section: str) -> None:
    """Copy the markdown tables this script prints into RESULTS.md's ``## section`` when the script
    ends without an exception (a failed or interrupted run leaves the section as it was)."""
    tee = _TableTee(sys.stdout)
    sys.stdout = tee
    failed = []
    previous_hook = sys.excepthook

    def hook(*exc_info):
        failed.append(exc_info[0])
        previous_hook(*exc_info)

    def finish() -> None:
        sys.stdout = tee.stream
        if not failed and tee.lines:
            script = os.path.relpath(sys.argv[0], Path(__file__).resolve().parent.parent)
            write_section(section, "\n".join(tee.lines), " ".join(["python", script, *sys.argv[1:]]))
            print(f"results: {RESULTS}, section {section!r}")

    sys.excepthook = hook
    atexit.register(finish)
