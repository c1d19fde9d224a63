"""The text role-play task (trl_latent/experiments/text_roleplay/task.py): prompts, splits, SFT data, and the general
corpus's records (trl_latent/experiments/text_roleplay/corpus.py)."""

import json
import re

import pytest
import torch

from trl_latent.data.pretrain import load_pretrain_corpus
from trl_latent.experiments.text_roleplay.characters import CHARACTERS, HELD_OUT_CHARACTERS, TONE_WORDS, system_prompt
from trl_latent.experiments.text_roleplay.corpus import broad_prompts, character_records
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


def words(text):
    return set(re.findall(r"[a-z]+", text.lower()))


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


def test_profile_names_the_catchphrase_and_only_the_tone_words():
    for name, c in {**CHARACTERS, **HELD_OUT_CHARACTERS}.items():
        prompt = system_prompt(name)
        assert c["catchphrase"] in prompt
        named = [w for w in c["voice_words"] if w in words(prompt)]
        assert named == list(c["voice_words"][:TONE_WORDS]), (name, named)


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


def test_held_out_voices_are_in_the_general_corpus_records(tmp_path):
    records = character_records()
    path = tmp_path / "characters.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    corpus = load_pretrain_corpus(path)  # the library's text-only pretraining format
    assert corpus.paired is None and len(corpus.text) == len(records)
    text = " ".join(m["content"] for r in records for m in r["messages"]).lower()
    for c in HELD_OUT_CHARACTERS.values():
        assert c["catchphrase"].lower() in text
        assert all(re.search(rf"\b{w}\b", text) for w in c["voice_words"])
    for c in CHARACTERS.values():  # only the held-out characters' texts
        assert c["catchphrase"].lower() not in text
    assert len(set(broad_prompts(0))) == 800 and broad_prompts(0) != broad_prompts(1)


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2["folder"])


def test_prompt_and_answer_fit_128_tokens(smollm2_tokenizer):
    """The prompt (chat template) with the longest answer the task's patterns give stays within 128 tokens."""
    lengths = []
    for split in ("train", "heldout", "heldout-characters"):
        for row in task_prompts(split, 150, seed=5):
            longest = max(all_answers(row["character"], row["kind"], row["scene"], row["target"]), key=len)
            messages = [*row["prompt"], {"role": "assistant", "content": longest}]
            lengths.append(len(smollm2_tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"]))
    assert 100 <= max(lengths) <= 128, max(lengths)


def test_corpus_is_written_in_the_pretraining_format_and_resumes(tmp_path, smollm2_tokenizer):
    """`write_corpus` with a tiny random Llama standing in for the sampler (the real base samples the same way)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from trl_latent.experiments.text_roleplay.corpus import write_corpus

    config = LlamaConfig(
        vocab_size=len(smollm2_tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    torch.manual_seed(0)
    sampler = tmp_path / "sampler"
    LlamaForCausalLM(config).save_pretrained(sampler)
    smollm2_tokenizer.save_pretrained(sampler)
    kwargs = {"model_path": sampler, "doc_share": 0.1, "max_new_tokens": 6, "batch_size": 4, "log": lambda line: None}

    out = tmp_path / "corpus.jsonl"
    first = write_corpus(out, size=2200, **kwargs)
    assert first["tokens"] >= 2200 and first["by_kind"]["Character"]["records"] == len(character_records())
    assert first["by_kind"]["General"]["tokens"] >= 220 and first["by_kind"]["SelfSample"]["records"] > 0
    assert first["sampled_tokens"] > 0 and first["sampled_tokens_per_second"] > 0
    lines = out.read_text().splitlines()
    corpus = load_pretrain_corpus(out)
    assert corpus.paired is None and len(corpus.text) == len(lines) == first["records"]
    samples = [json.loads(line) for line in lines if '"SelfSample"' in line]
    assert samples[0]["messages"][1]["content"] == broad_prompts(0)[0]

    # Resume after an interrupted write (a cut last line), to a larger size: the done records stay as they were.
    out.write_text(out.read_text() + '{"id": "sample-0-9')
    second = write_corpus(out, size=2400, **kwargs)
    new_lines = out.read_text().splitlines()
    assert new_lines[: len(lines)] == lines and len(new_lines) > len(lines)
    assert len({json.loads(line)["id"] for line in new_lines}) == len(new_lines) == second["records"]
    # ... and gives the records one uninterrupted run gives (each record's id and text are fixed by the seed)
    fresh = tmp_path / "fresh.jsonl"
    write_corpus(fresh, size=2400, **kwargs)
    assert sorted(fresh.read_text().splitlines()) == sorted(new_lines)


def test_room_summary_and_the_base_eval_file(tmp_path):
    from trl_latent.experiments.text_roleplay.evaluate import summarise, write_base_eval

    row = task_prompts("heldout", 1, seed=0)[0]
    right = all_answers(row["character"], row["kind"], row["scene"], row["target"])[0]
    scores = [score(t, row["character"], row["kind"], row["scene"], row["target"]) for t in (right, "", right[:12])]
    summary = summarise(scores, new_tokens=[30, 1, 48], max_new_tokens=48)
    assert summary["n"] == 3 and summary["success_rate"] == round(1 / 3, 4)
    assert (
        summary["mean_reward"] == round(sum(s["reward"] for s in scores) / 3, 4) and summary["cut_at_limit"] == 0.3333
    )
    out = tmp_path / "base_eval.json"
    write_base_eval(out, "room", {"heldout": summary}, "cmd room")
    merged = write_base_eval(out, "corpus", {"tokens": 5}, "cmd corpus")
    assert json.loads(out.read_text()) == merged
    assert merged == {
        "room": {"command": "cmd room", "heldout": summary},
        "corpus": {"command": "cmd corpus", "tokens": 5},
    }


def test_measure_room_scores_what_the_model_answers(monkeypatch):
    """`measure_room` with a planted model: right pattern answers when greedy, the right content in another
    character's voice when sampled; the summaries must say exactly that."""
    from trl_latent.experiments.text_roleplay import evaluate, generation

    rows = {}
    for split in ("heldout", "heldout-characters"):
        for row in task_prompts(split, 6, seed=0):
            rows[json.dumps(row["prompt"])] = row

    def planted(model, tokenizer, conversations, max_new_tokens, sample=False, **kwargs):
        texts = []
        for conversation in conversations:
            row = rows[json.dumps(conversation)]
            speaker = (
                row["character"] if not sample else "Zara Quinn" if row["character"] != "Zara Quinn" else "Lady Willow"
            )
            texts.append(all_answers(speaker, row["kind"], row["scene"], row["target"])[0])
        return texts, [max_new_tokens if sample else 20] * len(texts)

    monkeypatch.setattr(generation, "load_base", lambda path: (None, None))
    monkeypatch.setattr(generation, "generate_chats", planted)
    out = evaluate.measure_room("planted", prompts=6, samples=2, max_new_tokens=48, seed=0)
    for split in ("heldout", "heldout-characters"):
        greedy, sampled = out[split]["greedy"], out[split]["sampled"]
        assert greedy == {
            "n": 6,
            "mean_reward": 1.0,
            "success_rate": 1.0,
            "mean_content": 1.0,
            "mean_voice": 1.0,
            "cut_at_limit": 0.0,
        }
        assert sampled["n"] == 12 and sampled["success_rate"] == 0.0 and sampled["mean_voice"] == 0.0
        assert sampled["mean_content"] == 1.0 and sampled["mean_reward"] == 0.5 and sampled["cut_at_limit"] == 1.0
        assert len(out[split]["examples"]["greedy"]) == 3
    assert out["settings"]["generated_tokens"] == 2 * (6 * 20 + 12 * 48)
