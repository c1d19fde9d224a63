"""The shapes role-play task's world: a synthetic MMRole-style benchmark that needs no network.

Images show one or more coloured shapes drawn with PIL; characters with MMRole-style profiles (the five fields
`introduction`, `personality`, `experience`, `relationship`, `catchphrase`) comment on them in their own voice (a
catchphrase, voice words and four answer patterns of their own, all right). An answer always names what is in the image:
the count, the colour and the shape ("two red circles").

The task is built so the paper's claims can be tested on a laptop:
- **in-distribution and held-out characters**: `CHARACTERS` train and test in distribution, `OOD_CHARACTERS` only
  appear in the out-of-distribution test file;
- **coverage**: the paired image-text corpus never shows the colour/shape combinations in `HELD_OUT_COMBOS`, while
  the larger text-only corpus talks about every combination, so "coverage from text-only data" can show up (or not)
  in later experiments.

The datasets and files made of these scenes and answers are built by `task_data.py` (see `docs/synthetic_task.md`).

```python
>>> from trl_latent.experiments.shapes.scenes import reference_answer, ShapesScene
>>> reference_answer("Captain Rolo", ShapesScene("red", "circle", 2))
'Ahoy, matey! I spot two red circles on deck. A bold and brave sight!'
```
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from ...data.mmrole_prompts import PROFILE_FIELDS

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle", "diamond")
COUNT_WORDS = ("one", "two", "three", "four")
MAX_COUNT = len(COUNT_WORDS)

# The five text fields of an MMRole profile, in MMRole's order.

# name -> the five MMRole profile fields, plus the voice the answers use: `voice_words` (four words only this character
# uses; the first two are the "tone" its system prompt names) and `answers` (its answer patterns: all of them are right,
# so a prompt has several right answers). A pattern's slots: `{phrase}` ("two red circles"), `{Phrase}` (capitalised),
# `{colour}`, `{Colour}`, `{shapes}` ("circle" or "circles", agreeing with the count) and `{count}` ("two").
CHARACTERS: dict[str, dict[str, Any]] = {
    "Captain Rolo": {
        "introduction": "Captain Rolo is a cheerful sea captain who sails a small red boat.",
        "personality": "Loud, bold and brave, and always hopeful.",
        "experience": "He has sailed every sea and counted every wave.",
        "relationship": "He is an old friend of Madame Plume.",
        "catchphrase": "Ahoy, matey!",
        "voice_words": ("bold", "brave", "deck", "seas"),
        "answers": (
            "Ahoy, matey! I spot {phrase} on deck. A bold and brave sight!",
            "Ahoy, matey! On my deck lie {phrase}, bold as the seas.",
            "{Phrase} off the bow, brave and bold! Ahoy, matey!",
            "Ahoy, matey! Bold news from the deck: {colour} {shapes}, {count} of them, brave as the seas.",
        ),
    },
    "Madame Plume": {
        "introduction": "Madame Plume is a painter who lives in a quiet tower full of colours.",
        "personality": "Gentle, soft and a little dreamy.",
        "experience": "She has painted the same garden for forty years.",
        "relationship": "She teaches Professor Quill to paint.",
        "catchphrase": "How delightful!",
        "voice_words": ("soft", "dreamy", "garden", "brush"),
        "answers": (
            "How delightful! I see {phrase}, soft and dreamy like my garden.",
            "{Phrase}, painted soft as my garden. How delightful!",
            "How delightful! A dreamy little scene: {colour} {shapes}, {count} in all, soft as a brush.",
            "How delightful! My brush would love {phrase}, so soft and dreamy.",
        ),
    },
    "Professor Quill": {
        "introduction": "Professor Quill is a scholar of geometry who measures everything.",
        "personality": "Careful, precise and fond of facts.",
        "experience": "He wrote a book about the angles of every shape.",
        "relationship": "He argues kindly with Captain Rolo.",
        "catchphrase": "Quite remarkable indeed.",
        "voice_words": ("precise", "careful", "exactly", "measure"),
        "answers": (
            "Quite remarkable indeed. I count exactly {phrase}, a precise and careful result.",
            "By careful measure, {phrase}. Quite remarkable indeed.",
            "Quite remarkable indeed. Shape: {shapes}; colour: {colour}; exactly {count}. Precise.",
            "Quite remarkable indeed. A precise and careful count gives {phrase}.",
        ),
    },
    "Pip the Robot": {
        "introduction": "Pip the Robot is a small helper robot who loves to scan things.",
        "personality": "Eager, happy and bright.",
        "experience": "Pip was built in a workshop full of spare parts.",
        "relationship": "Pip carries brushes for Madame Plume.",
        "catchphrase": "Beep boop, scan complete!",
        "voice_words": ("happy", "bright", "beeps", "detects"),
        "answers": (
            "Beep boop, scan complete! Pip detects {phrase}. Happy bright beeps!",
            "Happy beeps! Pip detects {colour} {shapes}, count {count}. Beep boop, scan complete!",
            "Beep boop, scan complete! {Phrase} found. Bright and happy!",
            "Beep boop, scan complete! Sensors bright: {phrase}. Pip detects, Pip beeps!",
        ),
    },
}

# Held-out characters: their voices are in the general text (the base's pre-training and the text-only corpus) and in
# the out-of-distribution test, never in paired data, task dialogues or RL prompts.
OOD_CHARACTERS: dict[str, dict[str, Any]] = {
    "Granny Fern": {
        "introduction": "Granny Fern is a kind gardener who grows flowers of every colour.",
        "personality": "Warm, patient and wise; she calls everyone dearie.",
        "experience": "She has kept the village garden for sixty years.",
        "relationship": "She bakes bread for Pip the Robot.",
        "catchphrase": "Bless my boots!",
        "voice_words": ("warm", "dearie", "bread", "cosy"),
        "answers": (
            "Bless my boots! Dearie, I see {phrase}, as warm as fresh bread.",
            "Oh dearie, {phrase}, warm and cosy. Bless my boots!",
            "Bless my boots! {Colour} {shapes}, {count} of them, dearie, cosy as bread.",
            "Bless my boots! Warm news, dearie: {phrase}.",
        ),
    },
    "Sir Bramble": {
        "introduction": "Sir Bramble is a knight who guards a castle made of stone.",
        "personality": "Proud, noble and loyal; he speaks of his honour.",
        "experience": "He has won many tournaments.",
        "relationship": "He once rescued Captain Rolo from a storm.",
        "catchphrase": "By my sword!",
        "voice_words": ("noble", "honour", "behold", "loyal"),
        "answers": (
            "By my sword! Upon my honour, I behold {phrase}. A noble and loyal sight.",
            "I behold {phrase}, noble and true. By my sword!",
            "By my sword! {Colour} {shapes}, {count} in number; upon my honour, a loyal sight.",
            "By my sword! A noble sight: {phrase}, as loyal as my honour.",
        ),
    },
}

# How many of a character's voice words a right answer uses (every pattern uses at least this many).
MIN_VOICE_WORDS = 2

ALL_CHARACTERS: dict[str, dict[str, Any]] = {**CHARACTERS, **OOD_CHARACTERS}

# Colour/shape combinations the paired image-text corpus never shows (the text-only corpus covers them). One per
# colour, every shape at least once: (colour index + shape index) % 4 == 0.
HELD_OUT_COMBOS: tuple[tuple[str, str], ...] = tuple(
    (colour, shape) for ci, colour in enumerate(COLOURS) for si, shape in enumerate(SHAPES) if (ci + si) % 4 == 0
)

# Human questions of the comment dialogues, with what each one asks about.
QUESTIONS: tuple[tuple[str, str], ...] = (
    ("What do you see in this picture?", "what"),
    ("What colour are the shapes in this image?", "colour"),
    ("Which shape is in this picture?", "shape"),
    ("How many shapes are there?", "count"),
    ("Can you describe this image for me?", "what"),
)

# What the RGB fill of each colour is.
_RGB = {
    "red": (220, 30, 30),
    "green": (30, 160, 50),
    "blue": (30, 60, 220),
    "yellow": (235, 205, 20),
    "purple": (140, 40, 170),
    "orange": (245, 130, 20),
}


# ---------------------------------------------------------------------------------------------------- helpers
def _rng(*parts) -> random.Random:
    # String seeds are hashed with SHA-512 by `random`, so this is the same on every machine and every run.
    return random.Random("/".join(str(p) for p in parts))


def _character(name: str) -> dict[str, Any]:
    if name not in ALL_CHARACTERS:
        raise ValueError(f"Unknown character {name!r}; choose one of {sorted(ALL_CHARACTERS)}.")
    return ALL_CHARACTERS[name]


def _image_size(image_size) -> tuple[int, int]:
    """`56` -> (56, 56); `(280, 420)` -> width 280, height 420."""
    width, height = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if min(width, height) < 28:
        raise ValueError(
            f"image_size {image_size!r} is too small: the Qwen2-VL processor needs at least 28x28 pixels."
        )
    return int(width), int(height)


def _characters(characters) -> list[str]:
    if characters is None or characters == "id":
        return list(CHARACTERS)
    if characters == "ood":
        return list(OOD_CHARACTERS)
    if characters == "all":
        return list(ALL_CHARACTERS)
    if isinstance(characters, str):
        raise ValueError(f"characters={characters!r}: use 'id', 'ood', 'all' or a list of character names.")
    names = list(characters)
    for name in names:
        _character(name)
    if not names:
        raise ValueError("characters is empty: give at least one character name.")
    return names


def _check_max_count(max_count: int) -> None:
    if not 1 <= max_count <= MAX_COUNT:
        raise ValueError(f"max_count={max_count} must be between 1 and {MAX_COUNT}.")


def _cycled(items: list, n: int, rng: random.Random) -> list:
    # Shuffled passes over `items`: every item appears once `n >= len(items)`, and evenly after that.
    order = []
    while len(order) < n:
        block = list(items)
        rng.shuffle(block)
        order.extend(block)
    return order[:n]


def underscored(name: str) -> str:
    """MMRole file names use the character name with underscores: `Captain Rolo` -> `Captain_Rolo`."""
    return name.replace(" ", "_")


# ------------------------------------------------------------------------------------------------------ scenes
@dataclass(frozen=True)
class ShapesScene:
    """What an image shows: `count` shapes of one `shape`, all of one `colour`."""

    colour: str
    shape: str
    count: int = 1

    def __post_init__(self):
        if self.colour not in COLOURS:
            raise ValueError(f"Unknown colour {self.colour!r}; choose one of {COLOURS}.")
        if self.shape not in SHAPES:
            raise ValueError(f"Unknown shape {self.shape!r}; choose one of {SHAPES}.")
        if not 1 <= self.count <= MAX_COUNT:
            raise ValueError(f"count={self.count} must be between 1 and {MAX_COUNT}.")

    @property
    def phrase(self) -> str:
        """`"one red circle"`, `"three blue squares"`."""
        return f"{COUNT_WORDS[self.count - 1]} {self.colour} {self.shape}{'s' if self.count > 1 else ''}"


def sample_scene(rng: random.Random, max_count: int = 1, combos=None) -> ShapesScene:
    """Draw a scene uniformly over `combos` (default: every colour/shape pair) and counts 1..`max_count`."""
    colour, shape = rng.choice(combos) if combos else (rng.choice(COLOURS), rng.choice(SHAPES))
    return ShapesScene(colour, shape, rng.randint(1, max_count))


def _grid(count: int, width: int, height: int) -> tuple[int, int]:
    # Fewest cells that hold `count` shapes, laid along the longer side first.
    if count == 1:
        return 1, 1
    if count == 2:
        return (1, 2) if width >= height else (2, 1)
    return 2, 2


def draw_scene(scene: ShapesScene, image_size=56, seed=0):
    """Draw `scene` as an RGB PIL image: each shape in its own cell of a grid, jittered, on a light background.

    Args:
        scene (`ShapesScene`): what to draw.
        image_size (`int` or `tuple[int, int]`, *optional*, defaults to `56`): side, or (width, height).
        seed (*optional*, defaults to `0`): any hashable seed for the layout, background shade and jitter.
    """
    from PIL import Image, ImageDraw

    width, height = _image_size(image_size)
    rng = _rng("draw", seed, scene.colour, scene.shape, scene.count, width, height)
    shade = rng.randint(232, 255)
    image = Image.new("RGB", (width, height), (shade, shade, shade))
    draw = ImageDraw.Draw(image)
    rows, cols = _grid(scene.count, width, height)
    cells = rng.sample([(r, c) for r in range(rows) for c in range(cols)], scene.count)
    cell_w, cell_h = width / cols, height / rows
    for r, c in cells:
        side = min(cell_w, cell_h) * rng.uniform(0.55, 0.8)
        cx = (c + 0.5) * cell_w + rng.uniform(-1, 1) * (cell_w - side) / 2
        cy = (r + 0.5) * cell_h + rng.uniform(-1, 1) * (cell_h - side) / 2
        x0, y0, x1, y1 = cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2
        fill = _RGB[scene.colour]
        if scene.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif scene.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        elif scene.shape == "triangle":
            draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
        else:  # diamond
            draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    return image


# ------------------------------------------------------------------------------------------------------- text
def answer_patterns(character: str) -> tuple[str, ...]:
    """The answer patterns of `character` (all of them right answers; slots as in `CHARACTERS`)."""
    return tuple(_character(character)["answers"])


def scene_slots(scene: ShapesScene) -> dict[str, str]:
    """The values of a pattern's slots for `scene`."""
    shapes = scene.shape + ("s" if scene.count > 1 else "")
    count = COUNT_WORDS[scene.count - 1]
    return {
        "phrase": scene.phrase,
        "Phrase": scene.phrase[0].upper() + scene.phrase[1:],
        "colour": scene.colour,
        "Colour": scene.colour.capitalize(),
        "shapes": shapes,
        "count": count,
    }


def character_answer(character: str, scene: ShapesScene, pattern: int = 0) -> str:
    """`character`'s answer about `scene` in its pattern number `pattern` (every pattern is a right answer)."""
    patterns = answer_patterns(character)
    if not 0 <= pattern < len(patterns):
        raise ValueError(f"pattern={pattern}: {character} has patterns 0..{len(patterns) - 1}.")
    return patterns[pattern].format(**scene_slots(scene))


def all_answers(character: str, scene: ShapesScene) -> list[str]:
    """Every right answer of `character` about `scene`, one per pattern."""
    return [character_answer(character, scene, i) for i in range(len(answer_patterns(character)))]


def reference_answer(character: str, scene: ShapesScene) -> str:
    """The first of `character`'s right answers about `scene` (its pattern 0): its catchphrase, the scene and its
    voice words. Datasets draw one of the patterns per dialogue ([`character_answer`])."""
    return character_answer(character, scene, 0)


def character_profile(character: str) -> dict[str, str]:
    """The five MMRole profile fields of `character`."""
    profile = _character(character)
    return {key: profile[key] for key in PROFILE_FIELDS}


def character_system_prompt(character: str) -> str:
    """The short system prompt of the in-memory datasets: who to be, the catchphrase and two of the voice words.

    Short on purpose (the tiny model's speed depends on the sequence length); the paper's full MMRole prompt is built
    by the MMRole loader from the files [`write_synthetic_task`] writes.
    """
    profile = _character(character)
    tone = " and ".join(profile["voice_words"][:2])
    return f"You are {character}. Catchphrase: {profile['catchphrase']} Tone: {tone}."


def question_kind(question: str) -> str:
    """What a question of the task asks about: `"what"`, `"colour"`, `"shape"` or `"count"` (unknown: `"what"`)."""
    for text, kind in QUESTIONS:
        if text == question.strip():
            return kind
    lowered = question.lower()
    if "how many" in lowered:
        return "count"
    if "colour" in lowered or "color" in lowered:
        return "colour"
    if "which shape" in lowered:
        return "shape"
    return "what"


def paired_combos(held_out=HELD_OUT_COMBOS) -> list[tuple[str, str]]:
    """The colour/shape combinations the paired image-text corpus shows (all but `held_out`)."""
    held = {tuple(c) for c in held_out}
    return [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in held]


# Which colour/shape combinations a set of dialogues draws from: "shown" (the task's: every combination but the held-out
# ones), "held_out" (only `HELD_OUT_COMBOS`, for the coverage test) or "all".
COMBO_SETS = ("shown", "held_out", "all")


def combos_of(combos: str) -> list[tuple[str, str]]:
    """The (colour, shape) pairs of a combination set (`COMBO_SETS`)."""
    if combos == "shown":
        return paired_combos()
    if combos == "held_out":
        return list(HELD_OUT_COMBOS)
    if combos == "all":
        return [(c, s) for c in COLOURS for s in SHAPES]
    raise ValueError(f"combos={combos!r}: choose one of {COMBO_SETS}.")
