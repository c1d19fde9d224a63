"""`experiments.text_roleplay.corpus`: the general corpus in the library's pretraining format, resumable, and the
held-out characters' texts in it."""

import json
import re

import torch

from trl_latent.data.pretrain import load_pretrain_corpus
from trl_latent.experiments.text_roleplay.characters import CHARACTERS, HELD_OUT_CHARACTERS
from trl_latent.experiments.text_roleplay.corpus import broad_prompts, character_records


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
