"""`experiments.text_roleplay.evaluate`: the base's room on the held-out prompts, measured and summarised."""

import json

from trl_latent.experiments.text_roleplay.reward import score
from trl_latent.experiments.text_roleplay.task import (
    all_answers,
    task_prompts,
)


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
