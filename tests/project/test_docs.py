"""Every Python snippet in the README and the lead docs runs (docs cannot rot), and prints what the page says it
prints."""

import ast
import math
import re
from pathlib import Path

import pytest

from tests.fixtures.paths import ROOT

# Docs whose snippets are executed here; the other docs/*.md are executed by their own feature's tests.
DOCS = ["README.md", "docs/model.md"]


def _snippets(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def _printed_dict(output: str) -> dict:
    """The last line of `output` that is a dict literal (the Trainer logs its own dicts before the snippet's print)."""
    line = [line for line in output.splitlines() if line.startswith("{")][-1]
    return eval(line, {"__builtins__": {}}, {"nan": math.nan, "inf": math.inf})  # a repr; non-finite values fail later


def _check_readme(outputs: list[str], namespace: dict) -> None:
    """The quickstart prints the last step's reward and latent-action metrics: what the trainer logged, the reward
    being the sum of the two reward functions' means (TRL's default weights of 1)."""
    (output,) = outputs
    logged = _printed_dict(output)
    functions = ("rewards/colour_reward/mean", "rewards/distinct_words/mean")
    assert {"reward", "reward_std", "latent/kl", "latent/code_entropy", "latent/codes_used", *functions} <= set(logged)
    assert all(isinstance(v, float) and math.isfinite(v) for v in logged.values()), logged
    assert all(k.startswith(("reward", "latent/")) for k in logged), logged
    trainer = namespace["trainer"]
    last = trainer.state.log_history[-1]
    assert logged == {k: v for k, v in last.items() if k.startswith(("reward", "latent/"))}
    assert trainer.state.global_step == 2
    assert logged["reward"] == pytest.approx(sum(logged[key] for key in functions), abs=1e-6)
    # Every rollout has 8 tokens, so it has words: the share of distinct ones is in (0, 1] and the reward is positive.
    assert 0.0 < logged["rewards/distinct_words/mean"] <= 1.0 and 0.0 <= logged["rewards/colour_reward/mean"] <= 1.0
    # The functions are the snippet's own, called on what the rollouts decoded to.
    completions = [[{"role": "assistant", "content": "The square is red red"}]]
    assert namespace["colour_reward"](completions, colour=["red"]) == [1.0]
    assert namespace["distinct_words"](completions) == [0.8]
    codes = namespace["model"].config.codebook_size
    assert 1 < logged["latent/codes_used"] <= codes  # sampled codes of an untrained policy: several
    assert 0.0 < logged["latent/code_entropy"] <= math.log(codes) + 1e-6
    # KL >= 0 up to rounding (measured -1.2e-8: at the default learning rate of 1e-6 two steps barely move the policy).
    assert logged["latent/kl"] > -1e-6


def _check_model_page(outputs: list[str], namespace: dict) -> None:
    generation, shapes, memory, codes = (output.strip() for output in outputs)
    # Generation: one code and one log-probability per generated token, and the decoded completion.
    match = re.fullmatch(r"torch\.Size\(\[1, (\d+)\]\) torch\.Size\(\[1, (\d+)\]\) \[('.*'|\".*\")\]", generation)
    assert match and match[1] == match[2] and 1 <= int(match[1]) <= 8, generation
    # The building blocks: world logits over the vocabulary at every prompt position, pseudo-actions from text states.
    model, batch = namespace["model"], namespace["batch"]
    width = batch["input_ids"].shape[1]
    vocab = model.backbone.lm_head.out_features
    match = re.fullmatch(rf"torch\.Size\(\[1, {width}, {vocab}\]\) torch\.Size\(\[1, (\d+), (\d+)\]\) (\d+)", shapes)
    assert match and int(match[1]) == width and int(match[3]) > 0, (shapes, width, vocab)
    # The quantised-memory rows are the table the page shows.
    table = re.findall(
        r"^\| (Qwen2\.5-VL-\w+) \| ([\d.]+) GiB \| ([\d.]+) GiB \| ([\d.]+) GiB \| ([\d.]+) GiB \|$",
        (ROOT / "docs/model.md").read_text(),
        flags=re.M,
    )
    assert len(table) == 2, table
    printed = [line.split(" ", 1) for line in memory.splitlines()]
    assert [name for name, _ in printed] == [row[0] for row in table]
    for (_, values), row in zip(printed, table):
        assert list(ast.literal_eval(values).values()) == [float(v) for v in row[1:]], (values, row)
    # The code report: a row per used code, whose uses add up to the records' positions and shares to 100%.
    lines = codes.splitlines()
    assert lines[:2] == ["| code | uses | share | world model emits most |", "|---:|---:|---:|---|"], codes
    rows = [line.strip("|").split(" | ") for line in lines[2:]]
    report = namespace["report"]
    used = [row for row in report if row["count"] > 0]
    assert [int(r[0]) for r in rows] == [row["code"] for row in used] and len(rows) >= 1
    assert sum(int(r[1]) for r in rows) == sum(row["count"] for row in report) > 0
    assert sum(float(r[2].rstrip("%")) for r in rows) == pytest.approx(100.0, abs=0.05 * len(rows))
    assert all(r[3].count("%)") == 3 for r in rows), codes  # top_n=3 tokens with their shares


CHECKS = {"README.md": _check_readme, "docs/model.md": _check_model_page}


DEEPSPEED_LOG = re.compile(r"^\[\d{4}-\d\d-\d\d [^\]]*\] \[[A-Z]+\] \[[^\]]*\] .*\n", flags=re.M)


@pytest.mark.parametrize("doc", DOCS)
def test_doc_snippets_run(doc, tmp_path, monkeypatch, tiny_cache, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRL_LATENT_CACHE", str(tiny_cache))
    snippets = _snippets(ROOT / doc)
    assert snippets, f"{doc} has no python snippet"
    namespace: dict = {}
    outputs = []
    capsys.readouterr()
    for code in snippets:  # snippets of one page share a namespace, as a reader runs them in order
        exec(compile(code, f"{doc}", "exec"), namespace)
        # DeepSpeed's logger prints to stdout when it is first imported ("[<time>] [WARNING] [real_accelerator.py:...]
        # Setting accelerator to CPU"): whether a page's snippet is the first to import it depends on the order the
        # tests ran in, so its lines are not part of what the page prints.
        outputs.append(DEEPSPEED_LOG.sub("", capsys.readouterr().out))
    CHECKS[doc](outputs, namespace)
