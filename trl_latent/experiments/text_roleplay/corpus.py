"""The general corpus of the text role-play task: text with real next-token uncertainty, seen about once.

Three kinds of text-only record, in the library's pretraining format (one JSON object per line:
`{"id", "messages": [system, user, assistant], "instance_type"}`, read by
[`~trl_latent.data.pretrain.load_pretrain_corpus`]):

- `SelfSample`: the base's own answers, sampled at temperature 1 from the full distribution, to a broad set of prompts
  (`broad_prompts`: topics x kinds of request); learning from observation of a pretrained model, as CoLA does;
- `General`: real English prose a package ships: the Python documentation's topic pages of the standard library's
  `pydoc_data.topics`, cut at paragraph ends into pieces of about `DOC_PIECE_TOKENS` tokens (user turn "The following
  is a text.", as the authors' general records have it);
- `Character`: the held-out characters' profiles and lines in their voices (catchphrase and all six voice words).
  Their voices appear in this corpus only, never in task SFT data, so a model meets them through general text.

[`write_corpus`] writes a corpus of about `size` tokens (counted with the base's tokenizer over the assistant turns):
the character records (all of them, a few thousand tokens), a `doc_share` of documentation, and self-samples for the
rest. It is resumable: it appends to the file and skips the records already there (each record's id is fixed by the
seed), and it sums the time and tokens of the sampling into `<file>.stats.json`.

    python -m trl_latent.experiments.text_roleplay.corpus --size 150000 --out outputs/text_roleplay/corpus.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import time
from functools import lru_cache
from pathlib import Path

from .characters import HELD_OUT_CHARACTERS

__all__ = [
    "DEFAULT_SIZE",
    "broad_prompts",
    "character_records",
    "corpus_stats",
    "corpus_uncertainty",
    "doc_records",
    "write_corpus",
]

# tokens; 75% sampled: minutes on idle cores, hours on a busy machine (7 tokens/s measured there; it resumes)
DEFAULT_SIZE = 150_000
DOC_PIECE_TOKENS = 160
SAMPLE_SYSTEM = "You are a helpful assistant."
TEXT_PROMPT = "The following is a text."

TOPICS = (
    "the ocean",
    "volcanoes",
    "honeybees",
    "the history of bread",
    "learning a new language",
    "chess",
    "rainforests",
    "the moon landing",
    "how bicycles work",
    "coffee",
    "winter in the mountains",
    "a busy train station",
    "friendship",
    "the first day at a new job",
    "recycling",
    "dinosaurs",
    "the night sky",
    "gardening",
    "ancient Rome",
    "how vaccines work",
    "jazz music",
    "a rainy afternoon",
    "lighthouses",
    "the Olympic games",
    "saving money",
    "a small fishing village",
    "robots",
    "time management",
    "the water cycle",
    "castles",
    "street food",
    "photography",
    "earthquakes",
    "a long road trip",
    "public libraries",
    "penguins",
    "the printing press",
    "electric cars",
    "a birthday party",
    "sleep",
    "deserts",
    "the violin",
    "clouds",
    "volunteering",
    "an old bookshop",
    "the human heart",
    "kites",
    "mushrooms",
    "bridges",
    "a snowy morning",
    "the internet",
    "pirates",
    "detectives",
    "fairy tales",
    "space travel",
    "cooking pasta",
    "the Wild West",
    "clockmakers",
    "owls",
    "a school science fair",
    "markets around the world",
    "rivers",
    "trains",
    "painting",
    "football",
    "tea ceremonies",
    "the Arctic",
    "cats",
    "dogs",
    "a thunderstorm",
    "museums",
    "bees and flowers",
    "the seasons",
    "origami",
    "the postal service",
    "making friends as an adult",
    "a village festival",
    "maps",
    "the stock market",
    "glaciers",
)
REQUESTS = (
    "Write a short paragraph about {topic}.",
    "Tell me an interesting fact about {topic}.",
    "Explain {topic} to a ten-year-old.",
    "Write the opening of a story set around {topic}.",
    "What are the pros and cons of {topic}?",
    "Describe {topic} in a few sentences.",
    "Write a short poem about {topic}.",
    "Give me three tips related to {topic}.",
    "What would a day spent on {topic} look like?",
    "Write a diary entry about {topic}.",
)

# Held-out characters' texts: a profile and lines in their voice, on general subjects (never a task scene).
CHARACTER_SUBJECTS = (
    "the morning",
    "a long walk",
    "an old friend",
    "the rain",
    "a busy day",
    "a quiet evening",
    "music",
    "the city",
    "a good meal",
    "a new neighbour",
    "the weekend",
    "a letter",
    "the stars",
    "a lost key",
    "the sea",
    "a birthday",
)
CHARACTER_PROMPTS = (
    "Tell me about {name}.",
    "How does {name} talk?",
    "Write a few lines {name} might say about {subject}.",
)
CHARACTER_LINE_TEMPLATES = (
    "{catchphrase} Let me tell you about {subject}: {line}",
    "About {subject}? {line} {catchphrase}",
    "{line} That is how I feel about {subject}. {catchphrase}",
)


def broad_prompts(seed: int = 0) -> list[str]:
    """Every topic x request prompt of the self-samples (800), in a seeded order."""
    prompts = [r.format(topic=t) for t in TOPICS for r in REQUESTS]
    random.Random(f"text-roleplay-broad-{seed}").shuffle(prompts)
    return prompts


def _record(record_id: str, kind: str, system: str, user: str, text: str) -> dict:
    return {
        "id": record_id,
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": user},
            {"role": "assistant", "content": text},
        ],
        "instance_type": kind,
    }


def character_records() -> list[dict]:
    """The held-out characters' general texts: for each, a profile (who it is, its catchphrase and all its voice
    words) and lines in its voice about everyday subjects."""
    records = []
    for name, c in HELD_OUT_CHARACTERS.items():
        slug = name.lower().replace(" ", "-")
        words = ", ".join(c["voice_words"])
        profile = (
            f'{name} is {c["introduction"]}. {c["personality"]} {name}\'s catchphrase is "{c["catchphrase"]}", and '
            f'{name} often uses words such as {words}. For example: "{c["voice_lines"][0]}"'
        )
        records.append(_record(f"character-{slug}-profile", "Character", "", f"Tell me about {name}.", profile))
        voice = f'{name} speaks in a voice all their own: "{c["catchphrase"]}" ' + " ".join(
            f'"{line}"' for line in c["voice_lines"]
        )
        records.append(_record(f"character-{slug}-voice", "Character", "", f"How does {name} talk?", voice))
        for i, subject in enumerate(CHARACTER_SUBJECTS):
            line = c["voice_lines"][i % len(c["voice_lines"])]
            template = CHARACTER_LINE_TEMPLATES[i % len(CHARACTER_LINE_TEMPLATES)]
            text = template.format(catchphrase=c["catchphrase"], subject=subject, line=line)
            user = CHARACTER_PROMPTS[2].format(name=name, subject=subject)
            records.append(_record(f"character-{slug}-line-{i}", "Character", f"You are {name}.", user, text))
    return records


def _doc_paragraphs() -> list[tuple[str, str]]:
    """`(topic, paragraph)` of the Python documentation's topic pages, blank-line separated, whitespace tidied."""
    from pydoc_data.topics import topics

    out = []
    for topic in sorted(topics):
        for paragraph in topics[topic].split("\n\n"):
            text = paragraph.strip()
            if len(text) >= 40:
                out.append((topic, text))
    return out


@lru_cache(maxsize=4)
def _doc_pieces(tokenizer) -> tuple[tuple[str, str, int], ...]:
    """`(topic, text, tokens)` of the documentation pieces: whole paragraphs of one topic page, about
    `DOC_PIECE_TOKENS` tokens each."""
    pieces, current, current_tokens, topic_of = [], [], 0, None
    for topic, paragraph in _doc_paragraphs():
        n = len(tokenizer(paragraph, add_special_tokens=False).input_ids)
        if current and (topic != topic_of or current_tokens + n > DOC_PIECE_TOKENS):
            pieces.append((topic_of, "\n\n".join(current), current_tokens))
            current, current_tokens = [], 0
        current.append(paragraph)
        current_tokens += n
        topic_of = topic
    if current:
        pieces.append((topic_of, "\n\n".join(current), current_tokens))
    return tuple(pieces)


def doc_records(tokenizer, budget: int, seed: int = 0) -> list[dict]:
    """Pieces of the standard library's documentation prose (whole paragraphs, about `DOC_PIECE_TOKENS` tokens each),
    in a seeded order, until `budget` tokens."""
    pieces = _doc_pieces(tokenizer)
    order = list(range(len(pieces)))
    random.Random(f"text-roleplay-docs-{seed}").shuffle(order)
    records, used = [], 0
    for i in order:
        if used >= budget:
            break
        topic, text, n = pieces[i]
        records.append(_record(f"doc-{i}", "General", "", TEXT_PROMPT, text))
        used += n
    return records


def _read_done(path: Path) -> dict[str, dict]:
    done = {}
    if path.exists():
        with open(path) as handle:
            for line in handle:
                line = line.strip()
                if line:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut by an interrupted write: written again below
                    done[record["id"]] = record
    return done


def _tokens(tokenizer, record: dict) -> int:
    return len(tokenizer(record["messages"][-1]["content"], add_special_tokens=False).input_ids)


def write_corpus(
    out,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    model_path=None,
    doc_share: float = 0.25,
    max_new_tokens: int = 160,
    batch_size: int = 16,
    log=print,
) -> dict:
    """Write (or complete) a general corpus of about `size` tokens to the JSONL file `out`; returns its stats.

    Args:
        out: the JSONL file; records already in it (by id) are kept and not made again.
        size: the target number of tokens over all records' assistant turns.
        seed: fixes the documentation pieces, the prompts' order and the sampling.
        model_path: the base that samples (default SmolLM2-135M-Instruct, [`smollm2_path`]).
        doc_share: the share of `size` taken by documentation prose.
        max_new_tokens, batch_size: of the self-samples.
    """
    from .base import smollm2_path
    from .generation import generate_chats, load_base

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stats_path = out.with_name(out.name + ".stats.json")
    stats = (
        json.loads(stats_path.read_text()) if stats_path.exists() else {"sampling_seconds": 0.0, "sampled_tokens": 0}
    )
    path = model_path or smollm2_path()
    model, tokenizer = load_base(path)
    done = _read_done(out)
    if out.exists():  # rewrite without a cut last line before appending
        out.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
    total = sum(_tokens(tokenizer, r) for r in done.values())
    with open(out, "a") as handle:
        fixed = character_records() + doc_records(tokenizer, int(doc_share * size), seed=seed)
        for record in fixed:
            if record["id"] not in done:
                handle.write(json.dumps(record) + "\n")
                done[record["id"]] = record
                total += _tokens(tokenizer, record)
        handle.flush()
        prompts = broad_prompts(seed)
        for start in range(0, len(prompts), batch_size):
            if total >= size:
                break
            ids = [f"sample-{seed}-{i}" for i in range(start, min(start + batch_size, len(prompts)))]
            if all(i in done for i in ids):
                continue
            chats = [
                [
                    {"role": "system", "content": SAMPLE_SYSTEM},
                    {"role": "user", "content": prompts[int(i.rsplit("-", 1)[1])]},
                ]
                for i in ids
            ]
            began = time.perf_counter()
            texts, counts = generate_chats(
                model,
                tokenizer,
                chats,
                max_new_tokens,
                sample=True,
                seed=seed * 100_003 + start,
                batch_size=batch_size,
            )
            stats["sampling_seconds"] += time.perf_counter() - began
            stats["sampled_tokens"] += sum(counts)
            for record_id, chat, text in zip(ids, chats, texts):
                if record_id in done or not text:
                    continue
                record = _record(record_id, "SelfSample", SAMPLE_SYSTEM, chat[1]["content"], text)
                handle.write(json.dumps(record) + "\n")
                done[record_id] = record
                total += _tokens(tokenizer, record)
            handle.flush()
            stats_path.write_text(json.dumps(stats, indent=1) + "\n")
            log(
                f"{total} / {size} tokens, {stats['sampled_tokens'] / max(stats['sampling_seconds'], 1e-9):.1f} "
                "sampled tokens/s"
            )
    stats |= {"size_target": size, "seed": seed, "model": str(path), "max_new_tokens": max_new_tokens}
    stats_path.write_text(json.dumps(stats, indent=1) + "\n")
    return corpus_stats(out, tokenizer)


def corpus_stats(path, tokenizer=None) -> dict:
    """A corpus file's numbers: records and tokens (assistant turns, the base's tokenizer) by kind, bytes, and the
    sampling speed recorded beside it."""
    from .base import smollm2_path

    path = Path(path)
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(smollm2_path())
    by_kind: dict[str, dict] = {}
    for record in _read_done(path).values():
        kind = by_kind.setdefault(record["instance_type"], {"records": 0, "tokens": 0})
        kind["records"] += 1
        kind["tokens"] += _tokens(tokenizer, record)
    stats_path = path.with_name(path.name + ".stats.json")
    sampling = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    seconds, sampled = sampling.get("sampling_seconds", 0.0), sampling.get("sampled_tokens", 0)
    return {
        "file": str(path),
        "bytes": path.stat().st_size,
        "records": sum(k["records"] for k in by_kind.values()),
        "tokens": sum(k["tokens"] for k in by_kind.values()),
        "by_kind": by_kind,
        "sampled_tokens": sampled,
        "sampling_seconds": round(seconds, 1),
        "sampled_tokens_per_second": round(sampled / seconds, 1) if seconds else None,
        **{k: sampling[k] for k in ("size_target", "seed", "max_new_tokens") if k in sampling},
    }


def corpus_uncertainty(path, model_path=None, max_tokens: int = 512) -> dict:
    """How uncertain the base is about the corpus's assistant tokens, by kind: the mean negative log-likelihood of the
    actual next token and the mean entropy of the base's next-token distribution (nats), and the share of tokens
    that are the base's top-1 guess. A corpus a latent code can explain has high entropy where the base hesitates."""
    import torch

    from .base import smollm2_path
    from .generation import load_base

    model, tokenizer = load_base(model_path or smollm2_path())
    sums: dict[str, list[float]] = {}
    for record in _read_done(Path(path)).values():
        prefix = tokenizer.apply_chat_template(record["messages"][:-1], tokenize=False, add_generation_prompt=True)
        head = tokenizer(prefix, add_special_tokens=False).input_ids
        body = tokenizer(record["messages"][-1]["content"], add_special_tokens=False).input_ids[:max_tokens]
        ids = torch.tensor([head + body])
        with torch.no_grad():
            logits = model(ids).logits[0, len(head) - 1 : -1].float()
        logp = logits.log_softmax(-1)
        target = ids[0, len(head) :]
        nll = -logp.gather(-1, target[:, None]).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        top1 = (logits.argmax(-1) == target).float()
        acc = sums.setdefault(record["instance_type"], [0.0, 0.0, 0.0, 0])
        acc[0] += nll.sum().item()
        acc[1] += entropy.sum().item()
        acc[2] += top1.sum().item()
        acc[3] += len(target)
    out = {
        kind: {"tokens": n, "nll": round(a / n, 3), "entropy": round(b / n, 3), "top1": round(c / n, 3)}
        for kind, (a, b, c, n) in sorted(sums.items())
    }
    n = sum(v[3] for v in sums.values())
    out["all"] = {
        "tokens": n,
        "nll": round(sum(v[0] for v in sums.values()) / n, 3),
        "entropy": round(sum(v[1] for v in sums.values()) / n, 3),
        "top1": round(sum(v[2] for v in sums.values()) / n, 3),
    }
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m trl_latent.experiments.text_roleplay.corpus",
        description="Write (or complete: it resumes) the text role-play task's general corpus as JSONL.",
    )
    parser.add_argument("--out", required=True, help="the JSONL file")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help=f"tokens (default {DEFAULT_SIZE})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="the base that samples (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--doc-share", type=float, default=0.25)
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.size <= 0 or not 0 <= args.doc_share < 1:
        parser.error("--size must be positive and --doc-share in [0, 1)")
    import torch

    torch.set_num_threads(args.threads)
    stats = write_corpus(
        args.out, args.size, args.seed, args.model, args.doc_share, args.max_new_tokens, args.batch_size
    )
    print(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
