"""`experiments.shapes.general_text`: the out-of-distribution characters' voices and the held-out combinations
reach a model only through the general text, as in the paper."""

import json
import re

from trl_latent.experiments.shapes.general_text import general_sft_dataset
from trl_latent.experiments.shapes.reward import parse_scene
from trl_latent.experiments.shapes.scenes import (
    ALL_CHARACTERS,
    HELD_OUT_COMBOS,
    MIN_VOICE_WORDS,
    OOD_CHARACTERS,
)
from trl_latent.experiments.shapes.task_data import (
    synthetic_rl_dataset,
    synthetic_sft_dataset,
)


def _voice_marks(name: str) -> list[str]:
    """What gives a character's voice away: its name, its catchphrase and its voice words."""
    profile = ALL_CHARACTERS[name]
    return [name, profile["catchphrase"], *profile["voice_words"]]


def _mentions(text: str, marks: list[str]) -> bool:
    return any(re.search(r"\b" + re.escape(mark.lower()) + r"\b", text.lower()) for mark in marks)


def test_ood_voices_are_in_the_general_text_only(task):
    """The paper's coverage gap: the out-of-distribution characters' voices and the held-out combinations are in the
    general text (the base's pre-training and the text-only corpus drawn from it), and in no paired record, task
    dialogue of the in-distribution split or RL prompt."""
    root, manifest = task
    marks = [mark for name in OOD_CHARACTERS for mark in _voice_marks(name)]
    text_only = json.dumps(json.loads(manifest.path(manifest.text_only_file).read_text()))
    general_rows = general_sft_dataset(160, seed=1)
    general = json.dumps(list(general_rows["messages"]))
    # The base's general text describes every combination, held-out ones included (80 text rows: 27 descriptions).
    described = {
        (scene.colour, scene.shape)
        for messages, images in zip(general_rows["messages"], general_rows["images"])
        if not images and (scene := parse_scene(messages[-1]["content"][0]["text"])) is not None
    }
    assert set(HELD_OUT_COMBOS) <= described
    for name in OOD_CHARACTERS:
        catchphrase = ALL_CHARACTERS[name]["catchphrase"]
        assert catchphrase in text_only and catchphrase in general, name
        assert sum(word in text_only for word in ALL_CHARACTERS[name]["voice_words"]) >= MIN_VOICE_WORDS, name
    paired = json.loads(manifest.path(manifest.paired_file).read_text())
    id_dialogues = [json.loads((root / f).read_text()) for f in manifest.dialogue_files]
    rl = synthetic_rl_dataset(64, seed=0)
    sft = synthetic_sft_dataset(64, seed=0)
    for text in (
        [m["content"] for r in paired for m in r["messages"]]
        + [t["value"] for sessions in id_dialogues for s in sessions for t in s["conversations"]]
        + [p["text"] or "" for prompt in rl["prompt"] for m in prompt for p in m["content"]]
        + [p["text"] or "" for messages in sft["messages"] for m in messages for p in m["content"]]
    ):
        assert not _mentions(text, marks), text
    held_out = set(HELD_OUT_COMBOS)
    assert not held_out & set(zip(rl["colour"], rl["shape"]))
    assert not held_out & set(zip(sft["colour"], sft["shape"]))
    for sessions in id_dialogues:
        for session in sessions:
            scene = parse_scene(session["conversations"][1]["value"])
            assert (scene.colour, scene.shape) not in held_out
    # ... while the held-out evaluation split is made of them.
    held = synthetic_rl_dataset(12, seed=0, split="eval-held-out", combos="held_out")
    assert set(zip(held["colour"], held["shape"])) <= held_out
