"""benchmarks/_results.py: a benchmark's tables replace their own section of RESULTS.md, stamped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _results  # noqa: E402


def test_a_section_is_replaced_and_the_others_kept(tmp_path):
    path = tmp_path / "RESULTS.md"
    _results.write_section("Search", "| a |\n|---|\n| 1 |", "python benchmarks/search.py", path)
    _results.write_section("Matching", "| b |\n|---|\n| 2 |", "python benchmarks/matching.py", path)
    _results.write_section("Search", "| a |\n|---|\n| 3 |", "python benchmarks/search.py --sizes 10", path)
    text = path.read_text()
    assert text.startswith("# Measured results")
    assert text.index("## Search") < text.index("## Matching") and text.count("## Search") == 1
    assert "| 3 |" in text and "| 1 |" not in text and "| 2 |" in text
    assert "`python benchmarks/search.py --sizes 10`" in text and "commit " in text and " cores" in text


SCRIPT = """
import sys
sys.path.insert(0, {benchmarks!r})
import _results
_results.RESULTS = _results.Path({results!r})
_results.publish_tables("Speed")
print("warming up")
print("| x | ms |")
print("|---|---:|")
print("| one | 1.5 |")
print("notes between tables")
print("| y |\\n|---|\\n| 2 |")
if len(sys.argv) > 1:
    raise SystemExit(int(sys.argv[1]))
raise RuntimeError("the run failed")
"""


def test_a_script_publishes_the_tables_it_prints_unless_it_fails(tmp_path):
    results = tmp_path / "RESULTS.md"
    script = tmp_path / "bench.py"
    script.write_text(SCRIPT.format(benchmarks=str(BENCHMARKS), results=str(results)))
    failed = subprocess.run([sys.executable, script], capture_output=True, text=True)
    assert failed.returncode == 1 and "| one | 1.5 |" in failed.stdout and not results.exists()
    done = subprocess.run([sys.executable, script, "0"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    section = results.read_text().split("## Speed\n", 1)[1]
    assert "| x | ms |\n|---|---:|\n| one | 1.5 |\n\n| y |\n|---|\n| 2 |" in section
    assert "warming up" not in section and "notes" not in section
