"""The embedded shapes role-play task: determinism, the MMRole layout, the held-out structure, images that show what
the answers say, and the docs' code blocks."""

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from tests.fixtures.paths import ROOT
from tests.fixtures.tasks import SMALL
from trl_latent.experiments.shapes.reward import parse_scene
from trl_latent.experiments.shapes.scenes import (
    CHARACTERS,
    COLOURS,
    HELD_OUT_COMBOS,
    OOD_CHARACTERS,
    PROFILE_FIELDS,
    SHAPES,
    ShapesScene,
    character_answer,
    paired_combos,
    reference_answer,
    underscored,
)
from trl_latent.experiments.shapes.task_data import (
    MANIFEST_NAME,
    synthetic_rl_dataset,
    synthetic_sft_dataset,
    tokenizer_corpus,
    write_synthetic_task,
)

DOCS = ROOT / "docs" / "synthetic_task.md"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ determinism
def test_written_task_is_deterministic(task, tmp_path):
    root, _ = task
    again = write_synthetic_task(tmp_path / "again", seed=0, max_count=4, **SMALL)
    assert _files(root) == _files(Path(again.root))
    other = write_synthetic_task(tmp_path / "other", seed=1, max_count=4, **SMALL)
    files_other = _files(Path(other.root))
    assert files_other.keys() == _files(root).keys()
    assert files_other != _files(root)


def test_in_memory_builders_are_deterministic():
    a, b = synthetic_sft_dataset(6, seed=3), synthetic_sft_dataset(6, seed=3)
    assert a["messages"] == b["messages"]
    assert [img.tobytes() for img in a["images"][0]] == [img.tobytes() for img in b["images"][0]]
    c = synthetic_sft_dataset(6, seed=4)
    assert a["messages"] != c["messages"] or a["images"][0][0].tobytes() != c["images"][0][0].tobytes()
    r1, r2 = synthetic_rl_dataset(5, seed=3), synthetic_rl_dataset(5, seed=3)
    assert r1["prompt"] == r2["prompt"] and r1["reference"] == r2["reference"]
    assert [i.tobytes() for i in r1["image"]] == [i.tobytes() for i in r2["image"]]
    # Splits of one seed differ.
    assert synthetic_rl_dataset(8, seed=3, split="eval")["reference"] != synthetic_rl_dataset(8, seed=3)["reference"]


# -------------------------------------------------------------------------------------------------- formats
def test_sft_and_rl_datasets_have_trl_formats():
    sft = synthetic_sft_dataset(4, seed=0, image_size=(84, 56))
    row = sft[0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"][1]["content"][0]["type"] == "image"
    assert len(row["images"]) == 1 and row["images"][0].size == (84, 56)
    assert row["messages"][2]["content"][0]["text"] == character_answer(
        row["character"], ShapesScene(row["colour"], row["shape"], row["count"]), row["pattern"]
    )
    rl = synthetic_rl_dataset(4, seed=0)
    assert {"prompt", "image", "reference", "character"} <= set(rl.column_names)
    assert [m["role"] for m in rl[0]["prompt"]] == ["system", "user"]
    assert rl[0]["prompt"][1]["content"][1]["text"] == rl[0]["question"]
    assert set(rl["character"]) == set(CHARACTERS)


def test_mmrole_layout(task):
    root, manifest = task
    assert (root / MANIFEST_NAME).exists()
    comment = root / "dialogues" / "in-distribution" / "comment"
    for name in CHARACTERS:
        profile = json.loads(
            (root / f"profiles/in-distribution/detailed_profiles/{underscored(name)}.json").read_text()
        )
        assert tuple(profile) == PROFILE_FIELDS and all(isinstance(v, str) and v for v in profile.values())
        for source, keys in (("shapes", ("from", "from")), ("script", ("role", "role"))):
            sessions = json.loads((comment / f"{underscored(name)}_{source}.json").read_text())
            assert len(sessions) == SMALL["sessions_per_file"]
            for session in sessions:
                assert session["id"].startswith(f"{underscored(name)}_comment_{source}_")
                assert (root / "images" / session["image"]).exists()
                human, answer = session["conversations"]
                assert (human[keys[0]], answer[keys[1]]) == ("human", name)
                assert "value" in human and "value" in answer
                if source == "script":
                    assert {"role_info", "place_info", "scene_info"} <= set(session)
    for name in OOD_CHARACTERS:
        assert (root / f"profiles/out-of-distribution/detailed_profiles/{underscored(name)}.json").exists()
    ood = json.loads((root / "dialogues/out-of-distribution/comment.json").read_text())
    assert len(ood) == len(OOD_CHARACTERS) * SMALL["ood_sessions_per_character"]
    # Human `from`, character `role`, as in the released MMRole comment files.
    assert {s["conversations"][1]["role"] for s in ood} == set(OOD_CHARACTERS)
    assert all(s["conversations"][0]["from"] == "human" for s in ood)
    assert manifest.counts == {
        "id_sessions": 2 * len(CHARACTERS) * SMALL["sessions_per_file"],
        "ood_sessions": len(ood),
        "paired": SMALL["n_paired"],
        "text_only": SMALL["n_text_only"],
    }
    assert json.loads((root / MANIFEST_NAME).read_text())["counts"] == manifest.counts


def test_pretraining_corpora_and_held_out_combos(task):
    root, manifest = task
    paired = json.loads(manifest.path(manifest.paired_file).read_text())
    text_only = json.loads(manifest.path(manifest.text_only_file).read_text())
    assert {tuple(c) for c in manifest.held_out_combos} == set(HELD_OUT_COMBOS)
    paired_seen, text_seen = set(), set()
    for record in paired:
        assert set(record) == {"id", "images", "messages", "instance_type"}
        assert (root / record["images"][0]).exists()
        user = next(m for m in record["messages"] if m["role"] == "user")
        assert user["content"].startswith("<image>")
        scene = parse_scene(record["messages"][-1]["content"])
        paired_seen.add((scene.colour, scene.shape))
    for record in text_only:
        assert "images" not in record and set(record) == {"id", "messages", "instance_type"}
        assert not any("<image>" in m["content"] for m in record["messages"])
        scene = parse_scene(record["messages"][-1]["content"])
        if scene is not None:
            text_seen.add((scene.colour, scene.shape))
    all_combos = {(c, s) for c in COLOURS for s in SHAPES}
    assert paired_seen == set(paired_combos()) == all_combos - set(HELD_OUT_COMBOS)
    assert set(HELD_OUT_COMBOS) <= text_seen  # the text-only corpus talks about the held-out combinations too
    assert len(text_only) > len(paired)


def _task_texts(root: Path) -> list[str]:
    """Every sentence the written task holds: dialogue turns, profile fields and pretraining messages."""
    texts = []
    for path in root.rglob("*.json"):
        data = json.loads(path.read_text())
        if path.name == MANIFEST_NAME:
            continue
        if isinstance(data, dict):  # a profile
            texts.extend(data.values())
            continue
        for record in data:
            texts.extend(turn["value"] for turn in record.get("conversations", []))
            texts.extend(m["content"].replace("<image>\n", "") for m in record.get("messages", []))
            texts.extend(record.get(k, "") for k in ("place_info", "scene_info"))
    return texts


def test_tokenizer_corpus_covers_every_word_of_the_task(task):
    root, _ = task
    corpus_words = {w for line in tokenizer_corpus() for w in re.findall(r"[A-Za-z]+", line)}
    texts = _task_texts(root) + [q for q in synthetic_rl_dataset(8, seed=0)["question"]]
    texts += [
        part["text"]
        for messages in synthetic_sft_dataset(8, seed=0)["messages"]
        for message in messages
        for part in message["content"]
        if part["type"] == "text"
    ]
    assert len(texts) > 100
    task_words = {w for text in texts for w in re.findall(r"[A-Za-z]+", text)}
    assert task_words - corpus_words == set()


# -------------------------------------------------------------------------------------------------- bad input
def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="Unknown colour 'pink'"):
        ShapesScene("pink", "circle")
    with pytest.raises(ValueError, match="Unknown shape"):
        ShapesScene("red", "hexagon")
    with pytest.raises(ValueError, match="count=5"):
        ShapesScene("red", "circle", 5)
    with pytest.raises(ValueError, match="Unknown character 'Nobody'"):
        reference_answer("Nobody", ShapesScene("red", "circle"))
    with pytest.raises(ValueError, match="max_count=0"):
        synthetic_sft_dataset(2, max_count=0)
    with pytest.raises(ValueError, match="too small"):
        synthetic_rl_dataset(2, image_size=20)
    with pytest.raises(ValueError, match="characters='villains'"):
        synthetic_rl_dataset(2, characters="villains")
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        write_synthetic_task(tmp_path, **SMALL)
    every = [(c, s) for c in COLOURS for s in SHAPES]
    with pytest.raises(ValueError, match="paired corpus would be empty"):
        write_synthetic_task(tmp_path / "new", held_out_combos=every, **SMALL)


def test_rewriting_a_task_folder_replaces_it(tmp_path):
    write_synthetic_task(tmp_path, seed=0, **{**SMALL, "sessions_per_file": 4})
    manifest = write_synthetic_task(tmp_path, seed=0, **SMALL)
    fresh = write_synthetic_task(tmp_path / "fresh", seed=0, **SMALL)
    written = {k: v for k, v in _files(tmp_path).items() if not k.startswith("fresh")}
    assert written == _files(Path(fresh.root))  # nothing stale left from the first write
    assert manifest.counts == fresh.counts


# ------------------------------------------------------------------------------------------------------- docs
def _python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


def test_docs_python_blocks_run_and_print_what_they_say(tmp_path, monkeypatch):
    blocks = _python_blocks(DOCS.read_text())
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, str(DOCS), "exec"), {})
        printed = out.getvalue().splitlines()
        lines = block.splitlines()
        for line, following in zip(lines, lines[1:]):
            # A `# ...` line right after a print states what it prints.
            if line.startswith("print(") and following.startswith("# "):
                assert following[2:] in printed, (following, printed)
