"""The data behind the experiment's tables, and the tables built from it.

Every table of the embedded experiment in the README and docs is built from a committed file under `results/` (text
files only: JSON, markdown) by a function here, and sits in its markdown file between two markers::

    <!-- generated: demo-table from results/demo/results.json -->
    ...the table...
    <!-- /generated: demo-table -->

A test rebuilds every block from the committed data and checks that the docs hold it byte for byte, so a number in a
generated table cannot drift from its data. After new data lands, rewrite the blocks with

```
python -m trl_latent.experiments.evidence --write     # rebuild every block in place
python -m trl_latent.experiments.evidence --check     # exit 1 and name each block that differs
```

Whole generated pages (docs/results.md, from the study's cells) are checked the same way, against
`study.report_markdown`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

RESULTS = Path("results")
DEMO_RESULTS = RESULTS / "demo" / "results.json"
LOSS_LABELS = {"grpo": "GRPO", "dr_grpo": "Dr.GRPO", "dapo": "DAPO", "bnpo": "BNPO"}


def _load(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path} is missing: it is the committed data of a generated table.") from err


def _mean_std(metrics: dict, key: str, digits: int) -> str:
    value, std = metrics[key], metrics.get(f"{key}_std")
    return f"{value:.{digits}f}" if std is None else f"{value:.{digits}f} ± {std:.{digits}f}"


def demo_models(results: dict) -> list[tuple[str, dict]]:
    """The demo's models in table order, as (label, held-out evaluation by split)."""
    loss = LOSS_LABELS.get(results["config"]["loss"], results["config"]["loss"])
    models = [("base (general pretraining)", results["eval_base"]), ("token: SFT", results["token"]["eval_sft"])]
    if "token_text" in results:
        models.append(("token: SFT with the text-only corpus", results["token_text"]["eval_sft"]))
    models += [
        (f"token: SFT + {loss}", results["token"]["eval_rl"]),
        ("latent: stages 1-5", results["latent"]["eval_sft"]),
        (f"latent: stages 1-5 + {loss}", results["latent"]["eval_rl"]),
    ]
    return models


def demo_table(results: dict) -> str:
    """The README's table of the demo: every model on the three splits (all-correct and reward, mean ± std over the 3
    generations per prompt; OOD voice, held-out shape) and ID self-BLEU."""
    head = "| model | ID all | ID reward | OOD all | OOD voice | OOD reward | held-out all | held-out shape | "
    head += "held-out reward | self-BLEU |"
    lines = [head, "|---|" + "---:|" * 9]
    for label, ev in demo_models(results):
        cells = [
            _mean_std(ev["id"], "all", 2),
            _mean_std(ev["id"], "reward", 3),
            _mean_std(ev["ood"], "all", 2),
            f"{ev['ood']['voice']:.2f}",
            _mean_std(ev["ood"], "reward", 3),
            _mean_std(ev["held_out"], "all", 2),
            f"{ev['held_out']['shape']:.2f}",
            _mean_std(ev["held_out"], "reward", 3),
            f"{ev['id']['diversity/self_bleu']:.3f}",
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def demo_health(results: dict) -> str:
    """The latent-space health after each stage of the demo's latent arm, then the RL wall times."""
    from .shapes.pipeline import format_health

    token, latent = results["token"]["rl"], results["latent"]["rl"]
    wall = (
        f"RL wall time: token {token['seconds']:.1f} s, latent {latent['seconds']:.1f} s (latent/token "
        f"{latent['seconds'] / token['seconds']:.2f}x, {token['steps']} RL steps each); the whole job "
        f"{results['seconds']:.0f} s."
    )
    return format_health(results["latent"]["stages"]) + "\n\n" + wall


def demo_probes(results: dict) -> str:
    """Answer-token accuracy (teacher forcing on held-out task dialogues) of the base and the token SFT models."""
    probes = [
        ("the base", results.get("pretrain", {})),
        ("token SFT", results["token"].get("sft", {})),
        ("token SFT with the text-only corpus", results.get("token_text", {}).get("sft", {})),
    ]
    measured = [f"{name} {entry['answer_token_accuracy']:.3f}" for name, entry in probes if entry]
    return "Answer tokens predicted (teacher forcing, held-out task dialogues): " + ", ".join(measured) + "."


@dataclass(frozen=True)
class Block:
    """A generated block: its name, the committed file it is built from, and the builder."""

    name: str
    source: Path
    build: Callable[[dict], str]

    def render(self, root: Path = Path(".")) -> str:
        source = root / self.source
        if self.source.suffix == "":  # a folder of cells: every `*-seed*.json` in it
            from .text_roleplay.study import load_cells

            if not source.is_dir():
                raise FileNotFoundError(f"{source} is missing: it holds the committed data of a generated table.")
            return self.build({"cells": load_cells(source)})
        return self.build(_load(source))


def text_study_headline(data: dict) -> str:
    """The README's headline of the text role-play study (SmolLM2-135M-Instruct), from its committed cells."""
    from .text_roleplay.study import headline

    return headline(data["cells"])


BLOCKS = {
    block.name: block
    for block in (
        Block("demo-table", DEMO_RESULTS, demo_table),
        Block("demo-health", DEMO_RESULTS, demo_health),
        Block("demo-probes", DEMO_RESULTS, demo_probes),
        Block("text-study-headline", RESULTS / "text_roleplay" / "cells", text_study_headline),
    )
}
# The markdown files that hold generated blocks.
DOCUMENTS = (Path("README.md"), Path("docs/findings.md"))

_BLOCK = re.compile(
    r"(?P<open><!-- generated: (?P<name>[\w-]+) from (?P<source>\S+) -->\n)(?:(?P<body>.*?)\n)?"
    r"(?P<close><!-- /generated: (?P=name) -->)",
    re.DOTALL,
)
_OPENING = re.compile(r"<!-- generated: [\w-]+ from ")


def blocks_in(text: str) -> dict[str, tuple[str, str]]:
    """Each generated block of a markdown text: name -> (the source its marker names, its body); an opening marker
    without its closing one (or misspelt) is an error."""
    blocks = {m["name"]: (m["source"], m["body"] or "") for m in _BLOCK.finditer(text)}
    if len(_OPENING.findall(text)) != len(blocks):
        raise ValueError(
            "A `<!-- generated: NAME from FILE -->` marker has no `<!-- /generated: NAME -->` to close it."
        )
    return blocks


def rewrite(text: str, root: Path = Path(".")) -> str:
    """`text` with every generated block rebuilt from its committed data; an unknown block or a marker naming
    another source than the block's is an error."""

    blocks_in(text)  # every marker closed

    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise ValueError(f"Unknown generated block {name!r}; known: {sorted(BLOCKS)}.")
        block = BLOCKS[name]
        if Path(match["source"]) != block.source:
            raise ValueError(f"Block {name!r} names {match['source']} but is built from {block.source}.")
        return match["open"] + block.render(root) + "\n" + match["close"]

    return _BLOCK.sub(replace, text)


def check(root: Path = Path("."), documents=DOCUMENTS) -> list[str]:
    """The blocks whose text differs from what their data builds, as `"<file>: <block>"`."""
    stale = []
    for document in documents:
        text = (root / document).read_text()
        rebuilt = blocks_in(rewrite(text, root))
        for name, (_, body) in blocks_in(text).items():
            if rebuilt[name][1] != body:
                stale.append(f"{document}: {name}")
    return stale


def write(root: Path = Path("."), documents=DOCUMENTS) -> list[str]:
    """Rebuild every block in place; returns the documents that changed."""
    changed = []
    for document in documents:
        path = root / document
        text = path.read_text()
        new = rewrite(text, root)
        if new != text:
            path.write_text(new)
            changed.append(str(document))
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--check", action="store_true", help="name each block that differs from its data")
    action.add_argument("--write", action="store_true", help="rebuild every block in place")
    args = parser.parse_args(argv)
    if args.write:
        changed = write()
        print("rewrote: " + (", ".join(changed) or "nothing (every block already matched its data)"))
        return 0
    stale = check()
    for entry in stale:
        print(f"stale: {entry}", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
