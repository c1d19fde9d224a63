"""The base's room on the text role-play task, and the record of it: `results/text_roleplay/base_eval.json`.

[`measure_room`] decodes SmolLM2-135M-Instruct (or any saved causal LM) on the held-out prompts of both held-out
splits (in-distribution characters on unseen scenes, held-out characters), greedy and sampled at temperature 1, and
scores every answer with the rule reward: mean reward, success rate (reward >= `SUCCESS_BAR`), mean content and voice
parts, and how often the answer ran to the token limit. [`write_base_eval`] merges a section (`room`, or `corpus`:
the numbers [`~trl_latent.experiments.text_roleplay.corpus.write_corpus`] recorded beside its file) into the JSON,
with the command that made it.

    python -m trl_latent.experiments.text_roleplay.evaluate room --prompts 48 --out results/text_roleplay/base_eval.json
    python -m trl_latent.experiments.text_roleplay.evaluate corpus --uncertainty \\
        --corpus results/text_roleplay/corpus-20k.jsonl --out results/text_roleplay/base_eval.json

`--uncertainty` adds the base's own view of the corpus ([`~trl_latent.experiments.text_roleplay.corpus.corpus_uncertainty`]):
mean NLL and next-token entropy and the top-1 share, by kind.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

from .task import HELD_OUT_SPLITS

__all__ = ["measure_room", "summarise", "write_base_eval"]


def summarise(scores: list[dict], new_tokens: list[int], max_new_tokens: int) -> dict:
    """Mean reward, success rate, mean content and voice parts, and the share of answers cut at the token limit."""
    return {
        "n": len(scores),
        "mean_reward": round(statistics.fmean(s["reward"] for s in scores), 4),
        "success_rate": round(statistics.fmean(s["success"] for s in scores), 4),
        "mean_content": round(statistics.fmean(s["content"] for s in scores), 4),
        "mean_voice": round(statistics.fmean(s["voice"] for s in scores), 4),
        "cut_at_limit": round(statistics.fmean(n >= max_new_tokens for n in new_tokens), 4),
    }


def measure_room(
    model_path=None,
    prompts: int = 48,
    samples: int = 1,
    max_new_tokens: int = 48,
    seed: int = 0,
    batch_size: int = 16,
    examples: int = 3,
) -> dict:
    """The base's reward on the held-out prompts before any task training.

    Args:
        model_path: a saved causal LM; defaults to SmolLM2-135M-Instruct ([`smollm2_path`]).
        prompts: prompts per held-out split.
        samples: sampled answers per prompt (temperature 1, full distribution), besides the greedy one.
        max_new_tokens: the most tokens per answer (the task's own answers take at most about 35).
        examples: answers kept per split and decoding, for the reader.

    Returns:
        `{split: {"greedy": summary, "sampled": summary, "examples": [...]}, "settings": {...}}`.
    """
    from .base import smollm2_path
    from .generation import generate_chats, load_base
    from .reward import SUCCESS_BAR, score
    from .task import task_prompts

    path = model_path or smollm2_path()
    model, tokenizer = load_base(path)
    out: dict = {}
    total_tokens, started = 0, time.perf_counter()
    for split in HELD_OUT_SPLITS:
        rows = task_prompts(split, prompts, seed=seed)
        out[split] = {"examples": {}}
        for decoding in ("greedy", "sampled"):
            todo = rows if decoding == "greedy" else [r for r in rows for _ in range(samples)]
            texts, counts = generate_chats(
                model,
                tokenizer,
                [r["prompt"] for r in todo],
                max_new_tokens,
                sample=decoding == "sampled",
                seed=seed,
                batch_size=batch_size,
            )
            total_tokens += sum(counts)
            scores = [score(t, r["character"], r["kind"], r["scene"], r["target"]) for t, r in zip(texts, todo)]
            out[split][decoding] = summarise(scores, counts, max_new_tokens)
            out[split]["examples"][decoding] = [
                {
                    "question": r["prompt"][1]["content"],
                    "character": r["character"],
                    "answer": t,
                    "reward": s["reward"],
                }
                for r, t, s in list(zip(todo, texts, scores))[:examples]
            ]
    seconds = time.perf_counter() - started
    out["settings"] = {
        "model": str(path),
        "prompts_per_split": prompts,
        "samples_per_prompt": samples,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "success_bar": SUCCESS_BAR,
        "sampling": "temperature 1.0, no top-k, no top-p",
        "generated_tokens": total_tokens,
        "seconds": round(seconds, 1),
        "tokens_per_second": round(total_tokens / seconds, 1),
    }
    return out


def write_base_eval(out: str | Path, section: str, data: dict, command: str) -> dict:
    """Merge `data` (with the `command` that made it) into the JSON file `out` under `section`; returns the file's
    content."""
    out = Path(out)
    current = json.loads(out.read_text()) if out.exists() else {}
    current[section] = {"command": command, **data}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(current, indent=1) + "\n")
    return current


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m trl_latent.experiments.text_roleplay.evaluate",
        description="Measure the base's room on the held-out prompts, or record a corpus's numbers.",
    )
    sub = parser.add_subparsers(dest="what", required=True)
    room = sub.add_parser("room", help="greedy and sampled held-out reward of the base, before task training")
    room.add_argument("--model", default=None, help="saved causal LM (default: SmolLM2-135M-Instruct)")
    room.add_argument("--prompts", type=int, default=48, help="prompts per held-out split")
    room.add_argument("--samples", type=int, default=1, help="sampled answers per prompt")
    room.add_argument("--max-new-tokens", type=int, default=48)
    room.add_argument("--seed", type=int, default=0)
    room.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    corpus = sub.add_parser("corpus", help="record a generated corpus's size and generation speed")
    corpus.add_argument("--corpus", required=True, help="the corpus JSONL written by the corpus module")
    corpus.add_argument(
        "--uncertainty", action="store_true", help="also the base's NLL, entropy and top-1 share on it, by kind"
    )
    corpus.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    for p in (room, corpus):
        p.add_argument("--out", default="results/text_roleplay/base_eval.json")
    args = parser.parse_args(argv)
    command = "python -m trl_latent.experiments.text_roleplay.evaluate " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    if args.what == "room":
        import torch

        torch.set_num_threads(args.threads)
        data = measure_room(args.model, args.prompts, args.samples, args.max_new_tokens, args.seed)
        data["settings"]["threads"] = args.threads
    else:
        import torch

        from .corpus import corpus_stats, corpus_uncertainty

        torch.set_num_threads(args.threads)
        data = corpus_stats(args.corpus)
        if args.uncertainty:
            data["base_uncertainty"] = corpus_uncertainty(args.corpus)
    write_base_eval(args.out, args.what, data, command)
    print(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
