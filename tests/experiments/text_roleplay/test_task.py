"""The text role-play task (trl_latent/experiments/text_roleplay/task.py): prompts, splits, SFT data, and what fits
the real base's 128 tokens."""

import json
import re

from tests.fixtures.text import words
from trl_latent.experiments.text_roleplay.characters import CHARACTERS, HELD_OUT_CHARACTERS, system_prompt
from trl_latent.experiments.text_roleplay.reward import score
from trl_latent.experiments.text_roleplay.task import (
    COLOURS,
    KINDS,
    OBJECTS,
    SETTINGS,
    Scene,
    all_answers,
    scene_pool,
    sft_dataset,
    task_prompts,
)


def test_prompt_rows_use_the_chat_format_and_carry_the_reward_columns():
    rows = task_prompts("heldout", 30, seed=1)
    assert len(rows) == 30 and len({r["id"] for r in rows}) == 30
    for row in rows:
        system, user = row["prompt"]
        assert system == {"role": "system", "content": system_prompt(row["character"])}
        scene = Scene.from_json(row["scene"])
        assert user["role"] == "user" and user["content"] == f"{scene.text()}\n{row['question']}"
        assert row["kind"] in KINDS
        if row["kind"] in ("colour", "count"):
            asked = scene.find(row["target"])
            assert asked.noun in row["question"] or asked.plural in row["question"]
            if row["kind"] == "count":
                assert asked.count > 1
        else:
            assert row["target"] == ""
        if row["kind"] in ("animal", "food"):
            assert scene.of(row["kind"])  # the scene can answer it
        assert len({o.colour for o in scene.objects}) == 4  # a colour names one object
    # the same seed gives the same prompts; another seed others
    assert task_prompts("heldout", 30, seed=1) == rows
    assert task_prompts("heldout", 30, seed=2) != rows


def test_splits_are_disjoint():
    train = task_prompts("train", 600, seed=0)
    heldout = task_prompts("heldout", 200, seed=0)
    heldout_chars = task_prompts("heldout-characters", 200, seed=0)
    assert {r["character"] for r in train} == set(CHARACTERS) == {r["character"] for r in heldout}
    assert {r["character"] for r in heldout_chars} == set(HELD_OUT_CHARACTERS)
    train_scenes = {Scene.from_json(r["scene"]).key() for r in train}
    for rows in (heldout, heldout_chars):
        assert not train_scenes & {Scene.from_json(r["scene"]).key() for r in rows}
        assert not {r["prompt"][1]["content"] for r in train} & {r["prompt"][1]["content"] for r in rows}
    # whatever the seed, a scene is on one side only
    for seed in range(3):
        assert not {s.key() for s in scene_pool(False, 300, seed)} & {s.key() for s in scene_pool(True, 300, seed + 7)}


def test_sft_records_come_from_training_prompts_and_score_full_marks():
    records = sft_dataset(120, seed=0)
    prompts = task_prompts("train", 120, seed=0)
    assert [r["messages"][:2] for r in records] == [p["prompt"] for p in prompts]
    for record in records:
        assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]
        parts = score(
            record["messages"][2]["content"], record["character"], record["kind"], record["scene"], record["target"]
        )
        assert parts["reward"] == 1.0
    assert len({r["messages"][2]["content"] for r in records}) == len(records)


def test_held_out_voices_appear_in_no_sft_record():
    text = json.dumps(sft_dataset(2000, seed=0)).lower()
    for name, c in HELD_OUT_CHARACTERS.items():
        assert name.lower() not in text
        assert c["catchphrase"].lower() not in text
        for word in c["voice_words"]:
            assert not re.search(rf"\b{word}\b", text), word
    # ... and the in-distribution voices are all in it
    for c in CHARACTERS.values():
        assert all(re.search(rf"\b{w}\b", text) for w in c["voice_words"])


def test_voice_words_are_not_scene_words():
    scene_words = set(COLOURS) | {w for noun, (plural, _) in OBJECTS.items() for w in words(f"{noun} {plural}")}
    scene_words |= {w for setting in SETTINGS for w in words(setting)}
    for c in {**CHARACTERS, **HELD_OUT_CHARACTERS}.values():
        assert not set(c["voice_words"]) & scene_words


def test_prompt_and_answer_fit_128_tokens(smollm2_tokenizer):
    """The prompt (chat template) with the longest answer the task's patterns give stays within 128 tokens."""
    lengths = []
    for split in ("train", "heldout", "heldout-characters"):
        for row in task_prompts(split, 150, seed=5):
            longest = max(all_answers(row["character"], row["kind"], row["scene"], row["target"]), key=len)
            messages = [*row["prompt"], {"role": "assistant", "content": longest}]
            lengths.append(len(smollm2_tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"]))
    assert 100 <= max(lengths) <= 128, max(lengths)
