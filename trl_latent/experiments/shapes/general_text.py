"""The general corpus of the embedded task: what the stand-in for a pretrained VLM learns before it sees the task.

A real instruct VLM is fluent and knows much of the world (including famous characters' voices) but not a benchmark's
characters' answers or its answer format. The tiny base stands in for one by learning this corpus, in the task's
language but not the task:
- **pictures** (image-text, a generic assistant): captions and short answers to the task's questions in several
  phrasings, over the colour/shape combinations paired data shows (never `HELD_OUT_COMBOS`);
- **scene descriptions** (text): a narrator describes drawings of every combination, held-out ones included;
- **small talk** (text): generic speakers in several registers (a shopkeeper, a child, a teacher, a reporter, a
  traveller) and all six characters, the out-of-distribution ones included, talk about their day in their own voice
  (catchphrase and voice words), never about a picture and never in an answer pattern.

So the base can see colours and shapes and knows every character's voice, but has never put the two together in the
task's answer format: task SFT teaches that, for the in-distribution characters only. The OOD characters' voices and
the held-out combinations reach a model only through this text, as in the paper, where the base and the text-only
corpora cover what narrow task data misses. The text-only pretraining corpus of the latent stages is drawn from the
same text ([`general_text_record`]).

```python
>>> from trl_latent.experiments.shapes.general_text import general_text_record
>>> record = general_text_record(0, seed=0)
>>> sorted(record)
['instance_type', 'messages']
```
"""

from __future__ import annotations

import random
from typing import Any

from .scenes import (
    ALL_CHARACTERS,
    COLOURS,
    COUNT_WORDS,
    QUESTIONS,
    SHAPES,
    ShapesScene,
    character_system_prompt,
    combos_of,
    draw_scene,
    question_kind,
    scene_slots,
)

GENERIC_SYSTEM = "You are a helpful assistant."
TEXT_PROMPT = "The following is a text."

# Captions and short answers of a generic assistant, by what the question asks (`question_kind`).
CAPTION_QUESTIONS = ("Describe the picture.", "What is in this image?")
# Every one names the colour and the shape (and the count where natural), as a captioner would.
PICTURE_ANSWERS = {
    "what": (
        "There {be} {phrase} in the picture.",
        "The image shows {phrase} on a plain background.",
        "I can see {phrase}.",
        "It is a picture of {phrase}.",
    ),
    "colour": ("The colour is {colour}: {phrase}.", "{Phrase}, all {colour}.", "The {shapes} {be} {colour}."),
    "shape": ("The shape is a {shape}: {phrase}.", "It shows {phrase}.", "Each one is a {colour} {shape}."),
    "count": ("There {be} {phrase}.", "I count {phrase}.", "{Count} in total: {colour} {shapes}."),
}

# A narrator describes drawings: every combination, held-out ones included.
SCENE_DESCRIPTIONS = (
    "{Phrase} on a white page.",
    "A drawing of {phrase} is simple and clear.",
    "Imagine {phrase}: the colour is {colour} and the shape is a {shape}.",
    "The picture in the book shows {phrase}.",
    "Here {be} {phrase}, drawn in {colour} ink.",
)

SMALL_TALK_PROMPTS = (
    "How was your day?",
    "What is the weather like?",
    "What did you have for lunch?",
    "Tell me about your home.",
    "What is your favourite colour?",
    "Where did you go today?",
    "What are you doing now?",
    "Tell me a story.",
)
THINGS = ("kettle", "window", "lamp", "basket", "kite", "door", "table", "hat")
PLACES = ("market", "river", "hill", "village", "library", "station")

# Generic speakers: a register (how they open) and what anyone might say. None uses a character's voice words.
GENERIC_SPEAKERS = {
    "a shopkeeper": "Good day to you.",
    "a child": "Guess what!",
    "a teacher": "Listen closely.",
    "a reporter": "In today's news,",
    "a traveller": "On the road again.",
}
GENERIC_LINES = (
    "My day was fine. I walked to the {place} and saw a {colour} {thing}.",
    "It is sunny by the {place}, and the sky is clear.",
    "I had soup and an apple near the {place}.",
    "My home has a {colour} door and a {shape} window.",
    "My favourite colour is {colour}, like my {thing}.",
    "I went to the {place} and bought a {thing}.",
    "Right now I am drawing a {colour} {shape}.",
    "Once upon a time a {colour} {thing} rolled down the {place}.",
)

# Each character's small talk: its catchphrase and at least two of its voice words, never an answer pattern.
CHARACTER_SMALL_TALK = {
    "Captain Rolo": (
        "Ahoy, matey! Today I sailed bold seas past the {place}.",
        "Ahoy, matey! My deck holds a {colour} {thing}, brave and bold.",
        "The seas are calm and my deck is clean. Ahoy, matey!",
        "Ahoy, matey! A brave sailor loves the {colour} seas.",
    ),
    "Madame Plume": (
        "How delightful! I painted a soft {colour} {thing} in my garden.",
        "How delightful! My brush is dreamy today, and the {place} is soft with light.",
        "In my garden a soft {colour} flower grows. How delightful!",
        "How delightful! A dreamy walk to the {place} with my brush.",
    ),
    "Professor Quill": (
        "Quite remarkable indeed. I measure the {thing} with precise care, exactly.",
        "Quite remarkable indeed. A careful walk to the {place}, exactly on time.",
        "To measure a {shape} you must be precise. Quite remarkable indeed.",
        "Quite remarkable indeed. My careful notes say the {thing} is {colour}, exactly.",
    ),
    "Pip the Robot": (
        "Beep boop, scan complete! Pip detects a {colour} {thing}. Happy beeps!",
        "Beep boop, scan complete! Pip rolled to the {place}, bright and happy.",
        "Happy beeps! Pip detects the {place}. Beep boop, scan complete!",
        "Beep boop, scan complete! Bright lights at the {place} make Pip happy.",
    ),
    "Granny Fern": (
        "Bless my boots! The bread is warm, dearie, come in from the {place}.",
        "Bless my boots! Dearie, my {colour} {thing} is cosy by the fire.",
        "Oh dearie, a cosy day at the {place}. Bless my boots!",
        "Bless my boots! Warm bread and a {colour} {thing}, dearie.",
    ),
    "Sir Bramble": (
        "By my sword! Upon my honour, I rode to the {place}.",
        "By my sword! Behold my {colour} {thing}, noble and loyal.",
        "A loyal knight guards the {place} with honour. By my sword!",
        "By my sword! Behold the noble {place}.",
    ),
}

# Shares of the general text: scene descriptions, generic small talk, characters' small talk.
_TEXT_KINDS = ("scene", "generic", "character")


def _rng(*parts) -> random.Random:
    return random.Random("/".join(str(p) for p in parts))


def _slots(scene: ShapesScene) -> dict[str, str]:
    slots = scene_slots(scene)
    return {
        **slots,
        "shape": scene.shape,
        "be": "is" if scene.count == 1 else "are",
        "Count": slots["count"].capitalize(),
    }


def _chat(system: str, user: str, assistant: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": user},
        {"role": "assistant", "content": assistant},
    ]


def picture_answer(question: str, scene: ShapesScene, rng: random.Random) -> str:
    """A generic assistant's answer to `question` about `scene` (a caption for "describe" questions)."""
    return rng.choice(PICTURE_ANSWERS[question_kind(question)]).format(**_slots(scene))


def picture_record(scene: ShapesScene, rng: random.Random) -> tuple[str, str]:
    """A (question, answer) pair about a picture of `scene`: a caption or a short answer to one of the task's questions."""
    question = rng.choice(CAPTION_QUESTIONS + tuple(q for q, _ in QUESTIONS))
    return question, picture_answer(question, scene, rng)


def general_text_record(i: int, seed: int = 0, max_count: int = 1) -> dict[str, Any]:
    """Record `i` of the general text: `{messages, instance_type}` (a scene description, a generic speaker's or a
    character's small talk), deterministic in (`i`, `seed`). Any 72 consecutive records describe every combination."""
    rng = _rng("general-text", seed, i)
    kind = _TEXT_KINDS[i % len(_TEXT_KINDS)]
    if kind == "scene":  # scene descriptions cycle through every combination: all appear within 72 records
        combos = combos_of("all")
        _rng("general-order", seed).shuffle(combos)
        colour, shape = combos[(i // len(_TEXT_KINDS)) % len(combos)]
    else:
        colour, shape = rng.choice(combos_of("all"))
    scene = ShapesScene(colour, shape, rng.randint(1, max_count))
    words = {**_slots(scene), "thing": rng.choice(THINGS), "place": rng.choice(PLACES)}
    if kind == "scene":
        text = rng.choice(SCENE_DESCRIPTIONS).format(**words)
        return {"messages": _chat("", TEXT_PROMPT, text), "instance_type": "General"}
    if kind == "generic":
        speaker = rng.choice(list(GENERIC_SPEAKERS))
        text = f"{GENERIC_SPEAKERS[speaker]} {rng.choice(GENERIC_LINES).format(**words)}"
        return {
            "messages": _chat(f"You are {speaker}.", rng.choice(SMALL_TALK_PROMPTS), text),
            "instance_type": "dialogue",
        }
    name = rng.choice(list(ALL_CHARACTERS))
    text = rng.choice(CHARACTER_SMALL_TALK[name]).format(**words)
    return {
        "messages": _chat(character_system_prompt(name), rng.choice(SMALL_TALK_PROMPTS), text),
        "instance_type": "dialogue",
    }


def general_sft_dataset(n: int, seed: int = 0, image_size=56, max_count: int = 1, split: str = "general"):
    """`n` records of the general corpus in TRL's conversational VLM format (`messages`, `images`): even records are
    pictures (a generic assistant answers about an image of a combination paired data shows), odd ones general text
    (no image). The base's pre-training data."""
    from datasets import Dataset

    shown = combos_of("shown")
    rows = []
    for i in range(n):
        if i % 2 == 0:
            rng = _rng("general-picture", seed, split, i)
            colour, shape = rng.choice(shown)
            scene = ShapesScene(colour, shape, rng.randint(1, max_count))
            question, answer = picture_record(scene, rng)
            messages = [
                {"role": "system", "content": [{"type": "text", "text": GENERIC_SYSTEM}]},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]},
            ]
            images = [draw_scene(scene, image_size, seed=f"{seed}/{split}/{i}")]
        else:
            # Text records are numbered on their own, so every kind and every combination comes round.
            record = general_text_record(i // 2, seed=f"{seed}/{split}", max_count=max_count)
            messages = [
                {"role": m["role"], "content": [{"type": "text", "text": m["content"]}]} for m in record["messages"]
            ]
            images = []
        rows.append({"messages": messages, "images": images})
    return Dataset.from_list(rows)


def general_lines() -> list[str]:
    """Every sentence the general corpus can produce, once (for the tiny tokenizer's corpus)."""
    lines = [GENERIC_SYSTEM, TEXT_PROMPT, *CAPTION_QUESTIONS, *SMALL_TALK_PROMPTS]
    scenes = [ShapesScene(c, s, n) for c in COLOURS for s in SHAPES for n in range(1, len(COUNT_WORDS) + 1)]
    for scene in scenes:
        slots = _slots(scene)
        for answers in PICTURE_ANSWERS.values():
            lines.extend(a.format(**slots) for a in answers)
        lines.extend(t.format(**slots) for t in SCENE_DESCRIPTIONS)
    n = max(len(THINGS), len(PLACES), len(COLOURS), len(SHAPES))
    fillers = [
        {"thing": THINGS[i % len(THINGS)], "place": PLACES[i % len(PLACES)], "colour": COLOURS[i % len(COLOURS)]}
        | {"shape": SHAPES[i % len(SHAPES)]}
        for i in range(n)
    ]
    for words in fillers:
        lines.extend(
            f"{opening} {line.format(**words)}" for opening in GENERIC_SPEAKERS.values() for line in GENERIC_LINES
        )
        for templates in CHARACTER_SMALL_TALK.values():
            lines.extend(t.format(**words) for t in templates)
    lines.extend(f"You are {speaker}." for speaker in GENERIC_SPEAKERS)
    return lines
