"""Evidence you can regenerate: every generated table in the README and docs is rebuilt from its committed data and
must match byte for byte; docs/results.md is the study's report over the committed cells."""

import json
import shutil
from pathlib import Path

import pytest

from tests.fixtures.paths import ROOT
from trl_latent.experiments import evidence
from trl_latent.experiments.shapes.study import (
    DOCS_REPORT_COMMAND,
    RESULTS_CELLS_DIR,
    STUDY_VERSION,
    docs_results_page,
    load_cells,
    report_markdown,
)


def test_every_generated_block_matches_its_committed_data():
    found = {name for document in evidence.DOCUMENTS for name in evidence.blocks_in((ROOT / document).read_text())}
    assert found == set(evidence.BLOCKS), "each block is shown somewhere, and only known blocks are"
    assert evidence.check(ROOT) == []


def _planted_cell(method: str, seed: int) -> dict:
    """A finished study cell as `study.summarize_cell` and `run_cell` write it, with the fields the report reads."""
    reward = 0.9 if method == "latent" else 0.8
    ev = {"all": 0.5 + 0.1 * seed * (method == "latent"), "reward": reward, "diversity/self_bleu": 0.3}
    ev.update({"diversity/distinct_2": 0.6, "diversity/embedding": 1.1})
    return {
        "study_version": STUDY_VERSION,
        "name": f"grpo-{method}-s{seed}",
        "loss": "grpo",
        "method": method,
        "ablation": "full",
        "seed": seed,
        "config": {"size": "small"},
        "reward_curve": [0.5, 0.6],
        "rl": {"steps": 2, "seconds": 2.0, "seconds_per_step": 1.0, "reward_first_quarter": 0.5},
        "eval": {"id": ev, "ood": ev, "held_out": ev},
        "eval_start": {"id": ev, "ood": ev, "held_out": ev},
        "codes": None,
        "health": {},
        "base": {},
        "baseline": None,
        "seconds": 10.0,
        "fingerprint": "f",
        "environment": {"machine": "m", "python": "3", "versions": {"torch": "2"}},
        "command": "trl-latent study",
        "finished_at": f"2026-01-0{seed + 1}",
    }


def test_docs_results_is_the_report_of_the_committed_cells(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    page = (ROOT / "docs" / "results.md").read_text()
    assert page == docs_results_page()
    if load_cells(ROOT / RESULTS_CELLS_DIR):
        assert page == report_markdown(ROOT / RESULTS_CELLS_DIR, Path("docs/results.md"), DOCS_REPORT_COMMAND)
    else:  # no cells committed: the page says so, with the commands, and holds no table
        assert "No study cell is committed yet" in page and "|---" not in page
    # Cells landing make the page stale until it is rebuilt from them.
    (tmp_path / "cells").mkdir()
    for seed in (0, 1):
        for method in ("token", "latent"):
            cell = _planted_cell(method, seed)
            (tmp_path / "cells" / f"{cell['name']}.json").write_text(json.dumps(cell))
    built = docs_results_page(tmp_path / "cells")
    assert built != page
    assert "| grpo | latent | 2 | 0.550 ± 0.071 | 0.900 ± 0.000 |" in built
    assert "| latent >= token on the held-out combinations (reward) | latent - token +0.100 ± 0.000 (2 seeds)" in built


def test_a_changed_number_or_marker_is_caught(tmp_path):
    for document in evidence.DOCUMENTS:
        (tmp_path / document).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / document, tmp_path / document)
    (tmp_path / evidence.DEMO_RESULTS).parent.mkdir(parents=True)
    results = json.loads((ROOT / evidence.DEMO_RESULTS).read_text())
    shutil.copy(ROOT / evidence.DEMO_RESULTS, tmp_path / evidence.DEMO_RESULTS)
    cells = evidence.BLOCKS["text-study-headline"].source
    shutil.copytree(ROOT / cells, tmp_path / cells)
    assert evidence.check(tmp_path) == []
    # A cell of the text study changes: only the README's headline is stale.
    first = sorted((tmp_path / cells).glob("*.json"))[0]
    cell = json.loads(first.read_text())
    cell["phases"]["train"]["planted"] = 1  # a field the headline does not read: nothing is stale
    first.write_text(json.dumps(cell))
    assert evidence.check(tmp_path) == []
    cell["complete"] = not cell["complete"]
    first.write_text(json.dumps(cell))
    assert evidence.check(tmp_path) == ["README.md: text-study-headline"]
    shutil.rmtree(tmp_path / cells)
    shutil.copytree(ROOT / cells, tmp_path / cells)
    # The data changes (a rerun gave another number): every block built from it is now stale.
    results["latent"]["rl"]["seconds"] += 1.0
    results["eval_base"]["id"]["reward"] += 0.25
    (tmp_path / evidence.DEMO_RESULTS).write_text(json.dumps(results))
    assert evidence.check(tmp_path) == ["README.md: demo-table", "docs/findings.md: demo-health"]
    assert sorted(evidence.write(tmp_path)) == ["README.md", "docs/findings.md"]
    assert evidence.check(tmp_path) == []
    # A hand edit inside a block is caught too.
    readme = tmp_path / "README.md"
    text = readme.read_text()
    body = evidence.blocks_in(text)["demo-table"][1]
    readme.write_text(text.replace(body, body.replace("| token: SFT |", "| token: SFT (edited) |")))
    assert evidence.check(tmp_path) == ["README.md: demo-table"]
    # A marker naming another source, or an unknown block, is an error, not a silent pass.
    readme.write_text(
        text.replace("generated: demo-table from results/demo/results.json", "generated: demo-table from x.json")
    )
    with pytest.raises(ValueError, match="names x.json but is built from results/demo/results.json"):
        evidence.check(tmp_path)
    readme.write_text(text + "\n<!-- generated: nope from a.json -->\nx\n<!-- /generated: nope -->\n")
    with pytest.raises(ValueError, match="Unknown generated block 'nope'"):
        evidence.check(tmp_path)
    # A block whose closing marker is missing or misspelt is an error, not a block skipped in silence.
    readme.write_text(text.replace("<!-- /generated: demo-table -->", "<!-- /generated: demo-tabel -->"))
    with pytest.raises(ValueError, match="has no `<!-- /generated: NAME -->` to close it"):
        evidence.check(tmp_path)
    # An empty block is rebuilt like any other.
    readme.write_text(
        text.replace(body, "").replace("-->\n\n<!-- /generated: demo-table", "-->\n<!-- /generated: demo-table")
    )
    assert evidence.check(tmp_path) == ["README.md: demo-table"]
    evidence.write(tmp_path)
    assert readme.read_text() == text
