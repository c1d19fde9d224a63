"""docs/performance.md's measured tables are the ones `benchmarks/report.py` builds from the committed JSON in
results/perf/, byte for byte, and each JSON holds what a reader needs to check it: the raw repeats, the machine and
the command that wrote it."""

import json
import shutil
import sys

import pytest

from tests.fixtures.paths import ROOT

RESULTS = ROOT / "results" / "perf"
DOC = ROOT / "docs" / "performance.md"


@pytest.fixture(scope="module")
def report():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import report

    return report


def test_docs_hold_the_tables_built_from_results(report):
    text, built = DOC.read_text(), report.tables(RESULTS)
    assert report.differences(text, built) == []
    marked = [m["id"] for m in report.BLOCK.finditer(text)]
    # Every committed result is shown, each table once, and no table is marked without a JSON behind it.
    assert sorted(marked) == sorted(built) and len(marked) == len(set(marked))
    assert report.render(text, built) == text


def test_every_result_names_its_command_machine_and_repeats():
    files = sorted(RESULTS.glob("*.json"))
    assert files, "no committed benchmark results"
    for path in files:
        result = json.loads(path.read_text())
        benchmark, size = path.stem.split("-", 1)
        assert (result["benchmark"], result["size"]) == (benchmark, size), path.name
        assert result["command"].startswith(f"python benchmarks/{benchmark}.py "), path.name
        assert {"cpu", "cores", "torch", "transformers", "trl", "load_average_at_start"} <= set(result["machine"])
        repeats = result["runs"]["token"] if benchmark == "rl_step" else result["repeats"]
        assert len(repeats) >= 3, f"{path.name}: {len(repeats)} repeats, a verdict needs 3"
        # The page names the file and the command beside the table it gives.
        assert f"`results/perf/{path.name}`, written by `{result['command']}`" in DOC.read_text()


def test_a_changed_measurement_shows_in_the_check(report, tmp_path):
    """The check is not vacuous: one raw time changed in one JSON makes its table differ from the page."""
    results = tmp_path / "perf"
    shutil.copytree(RESULTS, results)
    path = next(p for p in sorted(results.glob("*.json")))
    result = json.loads(path.read_text())
    if result["benchmark"] == "rl_step":
        result["runs"]["latent"][0]["step_s"] *= 3
    else:
        result["repeats"][0]["latent"]["call_s"] *= 3
    path.write_text(json.dumps(result))
    problems = report.differences(DOC.read_text(), report.tables(results))
    assert problems and all(line.startswith(path.stem) for line in problems), problems


def test_render_replaces_only_marked_blocks(report):
    text = "intro\n<!-- perf-table:a -->\nold\n<!-- /perf-table -->\nmiddle 0.59x\n<!-- perf-table:b -->\n<!-- /perf-table -->\n"
    built = {"a": "| new |", "b": "| b |"}
    assert report.render(text, built) == (
        "intro\n<!-- perf-table:a -->\n| new |\n<!-- /perf-table -->\nmiddle 0.59x\n"
        "<!-- perf-table:b -->\n| b |\n<!-- /perf-table -->\n"
    )
    assert report.differences(text, built) == [
        "a: differs from the table built from results/perf (python benchmarks/report.py)",
        "b: differs from the table built from results/perf (python benchmarks/report.py)",
    ]
    assert report.differences(text, {"a": "old"}) == ["b: no results/perf JSON gives this table"]
    with pytest.raises(KeyError, match="'b'"):
        report.render(text, {"a": "x"})
