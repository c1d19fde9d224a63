"""Build docs/performance.md's measured tables from the committed benchmark JSON (`results/perf/*.json`).

Every benchmark writes `results/perf/<benchmark>-<size>.json` (raw repeats, machine facts, the exact command). From
each file this builds two tables, each between markers in docs/performance.md:

    <!-- perf-table:<benchmark>-<size> -->          the measurements (medians, ratios with their spread) and source
    <!-- perf-table:<benchmark>-<size>-targets -->  every target's median, spread, verdict (and memory margin)
    ...
    <!-- /perf-table -->

    python benchmarks/report.py           # rewrite the tables in docs/performance.md from results/perf/
    python benchmarks/report.py --check   # exit 1, one line per table, where the page differs from the JSON

tests/project/test_perf_tables.py runs the check, so the page cannot drift from the committed data.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, ROOT  # noqa: E402

DOC = ROOT / "docs" / "performance.md"
BLOCK = re.compile(r"<!-- perf-table:(?P<id>[\w.-]+) -->\n(?P<body>.*?)<!-- /perf-table -->", re.S)


def _module(benchmark: str):
    if benchmark == "latent_decoding":
        import latent_decoding as module
    elif benchmark == "rl_step":
        import rl_step as module
    elif benchmark == "plan_check":
        import plan_check as module
    elif benchmark == "world_outputs":
        import world_outputs as module
    else:
        raise ValueError(f"no report for benchmark {benchmark!r}")
    return module


def source_line(path: Path, result: dict) -> str:
    """Which file and which command a table comes from, and how loaded the machine was."""
    machine = result["machine"]
    load = f"load average {machine['load_average_at_start'][0]:.1f} at the start"
    if "load_average_at_end" in machine:
        load += f", {machine['load_average_at_end'][0]:.1f} at the end"
    where = machine["gpu"] or f"{machine['cpu']}, {machine['cores']} cores"
    if "torch_threads" in machine:
        where += f", {machine['torch_threads']} torch thread(s)"
    return (
        f"Source: `results/perf/{path.name}`, written by `{result['command']}` "
        f"({result.get('finished', 'unfinished')}; {where}; {load}; torch {machine['torch']}, "
        f"transformers {machine['transformers']}, TRL {machine['trl']})."
    )


def tables(results: Path = RESULTS) -> dict[str, str]:
    """Every table the committed JSON gives, by marker id: `<stem>` (measurements and source) and `<stem>-targets`."""
    out = {}
    for path in sorted(Path(results).glob("*.json")):
        result = json.loads(path.read_text())
        module = _module(result["benchmark"])
        out[path.stem] = module.table(result) + "\n\n" + source_line(path, result)
        if targets := module.targets(result):
            out[f"{path.stem}-targets"] = targets
    return out


def render(text: str, built: dict[str, str]) -> str:
    """`text` with every marked block's body replaced by its built table (unknown ids: an error)."""

    def body(match):
        table_id = match["id"]
        if table_id not in built:
            raise KeyError(f"docs/performance.md marks table {table_id!r}, which no results/perf/*.json gives")
        return f"<!-- perf-table:{table_id} -->\n{built[table_id]}\n<!-- /perf-table -->"

    return BLOCK.sub(body, text)


def differences(text: str, built: dict[str, str]) -> list[str]:
    """One line per marked table whose body is not byte for byte the one built from the JSON."""
    lines = []
    for match in BLOCK.finditer(text):
        table_id = match["id"]
        if table_id not in built:
            lines.append(f"{table_id}: no results/perf JSON gives this table")
        elif match["body"] != built[table_id] + "\n":
            lines.append(f"{table_id}: differs from the table built from results/perf (python benchmarks/report.py)")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 where the page differs")
    parser.add_argument("--doc", default=str(DOC))
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    doc = Path(args.doc)
    text, built = doc.read_text(), tables(Path(args.results))
    if args.check:
        problems = differences(text, built)
        for line in problems:
            print(line)
        return 1 if problems else 0
    new = render(text, built)
    if new != text:
        doc.write_text(new)
    print(f"{len(BLOCK.findall(new))} tables in {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
