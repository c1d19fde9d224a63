"""The embedded "shapes role-play" task: a synthetic MMRole-style benchmark that needs no network.

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

Two ways to use it:
- in memory, for trainers and tests: [`synthetic_sft_dataset`] (TRL conversational VLM format) and
  [`synthetic_rl_dataset`] (TRL's VLM GRPO format with `reference` and `character` columns for the rubric reward);
- on disk, for loaders: [`write_synthetic_task`] writes the MMRole release layout plus a paired and a text-only
  corpus in the pretraining record format (see `docs/synthetic_task.md`).

```python
>>> from trl_latent.experiments.task import reference_answer, ShapesScene
>>> reference_answer("Captain Rolo", ShapesScene("red", "circle", 2))
'Ahoy, matey! I spot two red circles on deck. A bold and brave sight!'
```
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle", "diamond")
COUNT_WORDS = ("one", "two", "three", "four")
MAX_COUNT = len(COUNT_WORDS)

# The five text fields of an MMRole profile, in MMRole's order.
PROFILE_FIELDS = ("introduction", "personality", "experience", "relationship", "catchphrase")

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


# --------------------------------------------------------------------------------------------- in-memory samples
@dataclass
class ShapesSample:
    """One comment dialogue of the task: `character` answers `question` about `image` (a drawing of `scene`) with its
    answer pattern number `pattern`."""

    character: str
    scene: ShapesScene
    question: str
    answer: str
    image: Any = field(repr=False)
    pattern: int = 0


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


def sample_dialogues(
    n: int, seed: int = 0, image_size=56, characters=None, max_count: int = 1, split: str = "", combos: str = "shown"
):
    """`n` comment dialogues, deterministic in (`seed`, `split`): characters cycle; scenes, questions and answer
    patterns are drawn.

    Args:
        n (`int`): number of dialogues.
        seed (`int`, *optional*, defaults to `0`): seed; the same seed gives the same dialogues and images.
        image_size (`int` or `tuple[int, int]`, *optional*, defaults to `56`): side, or (width, height).
        characters (`str` or `list[str]`, *optional*): `"id"` (default), `"ood"`, `"all"` or a list of names.
        max_count (`int`, *optional*, defaults to `1`): most shapes per image (1-4).
        split (`str`, *optional*): a name mixed into the seed, so splits of one seed differ.
        combos (`str`, *optional*, defaults to `"shown"`): the colour/shape combinations drawn from (`COMBO_SETS`):
            task data never shows the held-out ones, which only the general text covers.
    """
    if n < 1:
        raise ValueError(f"n={n} must be at least 1.")
    _check_max_count(max_count)
    names = _characters(characters)
    pool = combos_of(combos)
    samples = []
    for i in range(n):
        rng = _rng("dialogue", seed, split, i)
        character = names[i % len(names)]
        scene = sample_scene(rng, max_count, pool)
        question = rng.choice(QUESTIONS)[0]
        pattern = rng.randrange(len(answer_patterns(character)))
        image = draw_scene(scene, image_size, seed=f"{seed}/{split}/{i}")
        answer = character_answer(character, scene, pattern)
        samples.append(ShapesSample(character, scene, question, answer, image, pattern))
    return samples


def _prompt_messages(sample: ShapesSample) -> list[dict]:
    # Every content is a list of typed parts so Arrow stores one schema for all turns.
    return [
        {"role": "system", "content": [{"type": "text", "text": character_system_prompt(sample.character)}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": sample.question}]},
    ]


def _metadata(sample: ShapesSample) -> dict:
    return {
        "character": sample.character,
        "colour": sample.scene.colour,
        "shape": sample.scene.shape,
        "count": sample.scene.count,
        "question": sample.question,
        "pattern": sample.pattern,
    }


def synthetic_sft_dataset(
    n: int, seed: int = 0, image_size=56, characters=None, max_count: int = 1, split="sft", combos: str = "shown"
):
    """A `datasets.Dataset` of `n` dialogues in TRL's conversational VLM format, for `trl.SFTTrainer`.

    Columns: `messages` (system, user with an image part and the question, assistant with the reference answer),
    `images` (a list holding one PIL image) and metadata `character`, `colour`, `shape`, `count`, `question`
    (SFTTrainer drops them for vision datasets).

    ```python
    >>> ds = synthetic_sft_dataset(4, seed=0)
    >>> ds[0]["messages"][2]["content"][0]["text"].startswith("Ahoy, matey!")
    True
    ```
    """
    from datasets import Dataset

    rows = []
    for sample in sample_dialogues(n, seed, image_size, characters, max_count, split, combos):
        messages = _prompt_messages(sample) + [
            {"role": "assistant", "content": [{"type": "text", "text": sample.answer}]}
        ]
        rows.append({"messages": messages, "images": [sample.image], **_metadata(sample)})
    return Dataset.from_list(rows)


def synthetic_rl_dataset(
    n: int, seed: int = 0, image_size=56, characters=None, max_count: int = 1, split="rl", combos: str = "shown"
):
    """A `datasets.Dataset` of `n` prompts in TRL's VLM GRPO format, for `trl.GRPOTrainer` with the rubric reward.

    Columns: `prompt` (system and user messages; the user content holds `{"type": "image"}` and the question), `image`
    (a PIL image), `reference` (the reference answer) and `character`, `colour`, `shape`, `count`, `question`. TRL
    passes the extra columns to reward functions as keyword arguments.
    """
    from datasets import Dataset

    rows = [
        {"prompt": _prompt_messages(s), "image": s.image, "reference": s.answer, **_metadata(s)}
        for s in sample_dialogues(n, seed, image_size, characters, max_count, split, combos)
    ]
    return Dataset.from_list(rows)


# ------------------------------------------------------------------------------------------------ on-disk task
@dataclass
class SyntheticTaskManifest:
    """What [`write_synthetic_task`] wrote: paths relative to `root`, counts, and the held-out combinations."""

    root: str
    seed: int
    image_size: list[int]
    max_count: int
    id_characters: list[str]
    ood_characters: list[str]
    held_out_combos: list[list[str]]
    paired_combos: list[list[str]]
    dialogue_files: list[str]
    profile_files: list[str]
    ood_dialogue_file: str
    paired_file: str
    text_only_file: str
    counts: dict[str, int]

    def to_dict(self) -> dict:
        return asdict(self)

    def path(self, relative: str) -> Path:
        """The absolute path of a file named relative to the task root."""
        return Path(self.root) / relative


MANIFEST_NAME = "synthetic_task.json"
_WRITTEN = ("dialogues", "profiles", "images", "pretrain", MANIFEST_NAME)


def _save_png(image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG", optimize=False)


def _dump(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _turn(speaker_key: str, speaker: str, text: str) -> dict:
    return {speaker_key: speaker, "value": text}


def _session(session_id: str, image: str, human: str, character: str, answer: str, style: str, extra=None) -> dict:
    # The MMRole release names the speaker with `from` in some places and `role` in others: "from" files use `from`
    # throughout, "role" files `role` throughout, "mixed" files use `from` for the human and `role` for the character
    # (as the released in-distribution comment files do).
    human_key, character_key = {"from": ("from", "from"), "role": ("role", "role"), "mixed": ("from", "role")}[style]
    session = {"id": session_id, "image": image, **(extra or {})}
    session["conversations"] = [_turn(human_key, "human", human), _turn(character_key, character, answer)]
    return session


def write_synthetic_task(
    root,
    seed: int = 0,
    image_size=56,
    sessions_per_file: int = 8,
    ood_sessions_per_character: int = 8,
    n_paired: int = 96,
    n_text_only: int = 384,
    max_count: int = 1,
    held_out_combos=HELD_OUT_COMBOS,
) -> SyntheticTaskManifest:
    """Write the shapes role-play task to `root` in the MMRole release layout, plus the pretraining corpora.

    Layout (paths relative to `root`):
    - `dialogues/in-distribution/comment/<Name>_shapes.json` and `<Name>_script.json`: lists of sessions
      `{id, image, conversations: [{from|role: speaker, value}]}` (script sessions also carry `role_info`,
      `place_info`, `scene_info` like MMRole's); the speaker key is `from` in shapes files, `role` in script files;
    - `dialogues/out-of-distribution/comment.json`: the held-out characters' sessions (human `from`, character
      `role`, as in the MMRole release);
    - `profiles/{in,out-of}-distribution/detailed_profiles/<Name>.json`: the five profile fields;
    - `images/`: dialogue images (`image` in a session is relative to this folder) and paired-corpus images;
    - `pretrain/paired.json` and `pretrain/text_only.json`: pretraining records `{id, images: [path], messages,
      instance_type}` (image paths relative to `root`; text-only records have no `images` key);
    - `synthetic_task.json`: the manifest.

    Dialogues (in- and out-of-distribution) and the paired corpus show every colour/shape combination but
    `held_out_combos` (the paired corpus cycles through them: all appear once `n_paired` >= their number); the paired
    corpus is a generic assistant's captions and short answers. The text-only corpus is drawn from the general text
    (`trl_latent.experiments.general`): every combination and every character's voice, the out-of-distribution ones
    included, which appear in no dialogue file of the in-distribution split and no paired record. The same `seed`
    writes byte-identical files.

    Args:
        root (`str` or `Path`): folder to write; must be empty, missing, or a folder this function wrote before
            (whose task files are then replaced).
        seed (`int`, *optional*, defaults to `0`): seed of every random choice.
        image_size (`int` or `tuple[int, int]`, *optional*, defaults to `56`): side or (width, height); the paper
            uses (280, 420).
        sessions_per_file (`int`, *optional*, defaults to `8`): sessions in each in-distribution dialogue file
            (two files per character).
        ood_sessions_per_character (`int`, *optional*, defaults to `8`): out-of-distribution sessions per character.
        n_paired (`int`, *optional*, defaults to `96`): paired image-text records.
        n_text_only (`int`, *optional*, defaults to `384`): text-only records (larger than the paired corpus).
        max_count (`int`, *optional*, defaults to `1`): most shapes per image (1-4).
        held_out_combos (*optional*, defaults to `HELD_OUT_COMBOS`): (colour, shape) pairs the paired corpus never
            shows.

    Returns:
        [`SyntheticTaskManifest`]: paths, counts and the held-out combinations (also written to
        `root/synthetic_task.json`).
    """
    root = Path(root)
    _check_max_count(max_count)
    width, height = _image_size(image_size)
    for name, value in [
        ("sessions_per_file", sessions_per_file),
        ("ood_sessions_per_character", ood_sessions_per_character),
        ("n_paired", n_paired),
        ("n_text_only", n_text_only),
    ]:
        if value < 1:
            raise ValueError(f"{name}={value} must be at least 1.")
    held_out = [tuple(c) for c in held_out_combos]
    for colour, shape in held_out:
        ShapesScene(colour, shape)  # validates the names
    shown = paired_combos(held_out)
    if not shown:
        raise ValueError("held_out_combos holds out every colour/shape combination; the paired corpus would be empty.")

    if root.exists() and any(root.iterdir()):
        if not (root / MANIFEST_NAME).exists():
            raise ValueError(
                f"{root} is not empty and holds no {MANIFEST_NAME}; write the synthetic task to an empty or new folder."
            )
        for name in _WRITTEN:  # a previous synthetic task: replace it, leave nothing stale behind
            target = root / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    root.mkdir(parents=True, exist_ok=True)

    def dialogue(name: str, *parts) -> tuple[ShapesScene, str, str]:
        # Task dialogues show only the combinations paired data shows; the answer is one of the character's patterns.
        rng = _rng("session", seed, *parts)
        scene, question = sample_scene(rng, max_count, shown), rng.choice(QUESTIONS)[0]
        return scene, question, character_answer(name, scene, rng.randrange(len(answer_patterns(name))))

    # In-distribution dialogues: two files per character, like MMRole's `_COCO` and `_script` files.
    dialogue_files, n_id_sessions = [], 0
    for name in CHARACTERS:
        for source, style in (("shapes", "from"), ("script", "role")):
            sessions = []
            for i in range(sessions_per_file):
                session_id = f"{underscored(name)}_comment_{source}_{i}"
                scene, question, answer = dialogue(name, "id", name, source, i)
                image = f"shapes/{session_id}.png"
                _save_png(draw_scene(scene, (width, height), seed=f"{seed}/{session_id}"), root / "images" / image)
                extra = None
                if source == "script":
                    extra = {
                        "role_info": "",
                        "place_info": "A sheet of drawing paper",
                        "scene_info": f"A drawing of {scene.phrase}.",
                    }
                sessions.append(_session(session_id, image, question, name, answer, style, extra))
            relative = f"dialogues/in-distribution/comment/{underscored(name)}_{source}.json"
            _dump(sessions, root / relative)
            dialogue_files.append(relative)
            n_id_sessions += len(sessions)

    # Out-of-distribution dialogues: one file for all held-out characters.
    ood_sessions = []
    for name in OOD_CHARACTERS:
        for i in range(ood_sessions_per_character):
            session_id = f"{underscored(name)}_comment_{i}"
            scene, question, answer = dialogue(name, "ood", name, i)
            image = f"shapes/{session_id}.png"
            _save_png(draw_scene(scene, (width, height), seed=f"{seed}/{session_id}"), root / "images" / image)
            ood_sessions.append(_session(session_id, image, question, name, answer, "mixed"))
    ood_file = "dialogues/out-of-distribution/comment.json"
    _dump(ood_sessions, root / ood_file)

    profile_files = []
    for split, table in (("in-distribution", CHARACTERS), ("out-of-distribution", OOD_CHARACTERS)):
        for name in table:
            relative = f"profiles/{split}/detailed_profiles/{underscored(name)}.json"
            _dump(character_profile(name), root / relative)
            profile_files.append(relative)

    from .general import CAPTION_QUESTIONS, GENERIC_SYSTEM, general_text_record, picture_record

    # Paired image-text corpus: a generic assistant's captions and short answers, never a held-out combination and
    # never a character's voice.
    paired = []
    paired_order = _cycled(shown, n_paired, _rng("paired-order", seed))
    for i in range(n_paired):
        rng = _rng("paired", seed, i)
        colour, shape = paired_order[i]
        scene = ShapesScene(colour, shape, rng.randint(1, max_count))
        image = f"images/paired/paired_{i:05d}.png"
        _save_png(draw_scene(scene, (width, height), seed=f"{seed}/paired/{i}"), root / image)
        question, answer = picture_record(scene, rng)
        paired.append(
            {
                "id": f"shapes_paired_{i}",
                "images": [image],
                "messages": [
                    {"role": "system", "content": GENERIC_SYSTEM},
                    {"role": "user", "content": f"<image>\n{question}"},
                    {"role": "assistant", "content": answer},
                ],
                "instance_type": "caption" if question in CAPTION_QUESTIONS else "vqa",
            }
        )
    paired_file = "pretrain/paired.json"
    _dump(paired, root / paired_file)

    # Text-only corpus, drawn from the general text: every combination (held-out ones included) and every
    # character's voice (out-of-distribution ones included), as scene descriptions and small talk.
    text_only = [
        {"id": f"shapes_text_{i}", **general_text_record(i, seed=f"text-only/{seed}", max_count=max_count)}
        for i in range(n_text_only)
    ]
    text_only_file = "pretrain/text_only.json"
    _dump(text_only, root / text_only_file)

    manifest = SyntheticTaskManifest(
        root=str(root),
        seed=seed,
        image_size=[width, height],
        max_count=max_count,
        id_characters=list(CHARACTERS),
        ood_characters=list(OOD_CHARACTERS),
        held_out_combos=[list(c) for c in held_out],
        paired_combos=[list(c) for c in shown],
        dialogue_files=dialogue_files,
        profile_files=profile_files,
        ood_dialogue_file=ood_file,
        paired_file=paired_file,
        text_only_file=text_only_file,
        counts={
            "id_sessions": n_id_sessions,
            "ood_sessions": len(ood_sessions),
            "paired": len(paired),
            "text_only": len(text_only),
        },
    )
    # The manifest on disk holds no absolute path, so copies of the folder stay byte-identical.
    _dump({k: v for k, v in manifest.to_dict().items() if k != "root"}, root / MANIFEST_NAME)
    return manifest


# -------------------------------------------------------------------------------------------------- tokenizer
def tokenizer_corpus() -> list[str]:
    """Text the tiny tokenizer's BPE merges are trained on: every sentence the task and its general corpus can produce.

    Lines are repeated roughly as often as the training data uses them (prompts and chat-template role names most),
    because a ~440-entry byte-level BPE has only ~180 merges: they should go to the words the model reads and writes
    most, which keeps sequences (and the tiny model's steps) short.
    """
    from .general import general_lines

    scenes = [ShapesScene(c, s, n) for c in COLOURS for s in SHAPES for n in range(1, MAX_COUNT + 1)]
    lines = []
    for name, profile in ALL_CHARACTERS.items():
        lines.append(f"[{name}]: ")
        lines.extend(profile[key] for key in PROFILE_FIELDS)
        for scene in scenes:
            lines.extend(all_answers(name, scene))
            lines.append(character_system_prompt(name))
    for question, _ in QUESTIONS:
        lines.extend([question] * 100)
    lines.extend(["system\n", "user\n", "assistant\n"] * 300)
    lines.extend(general_lines())
    for scene in scenes:
        lines.append(f"A drawing of {scene.phrase}.")
    lines.append("A sheet of drawing paper")
    # Fixed text of the MMRole prompts the MMRole loader builds (trl_latent.data.mmrole: the paper's template and
    # MMRole's evaluation template), once per character so the names around it are seen too.
    for name in ALL_CHARACTERS:
        lines += [
            "Please embody the given character and respond to the human user in a manner consistent with the "
            "character's traits, voice, and perspective.",
            f"Please step into the shoes of {name}. Imagine you are talking with a curious human about the given "
            "image. This requires a deep understanding of the character's background, including their personality, "
            "experiences, abilities, and relationships.",
            f"The auxiliary information about {name} is as follows:",
            "- Introduction: - Personality: - Experience: - Relationship: - Catchphrase: ",
            f"The conversation history between {name} and the curious human is as follows:",
            f"Please embody the given character of {name} and complete the following conversation.",
            f"[human]: [{name}]: ",
            "You are a dedicated role-playing assistant designed to immerse yourself fully in the character you are "
            "portraying.",
            f"The description of {name} is as follows:",
            "### Brief Introduction ### Personality ### Life Story ### Main Interpersonal Relationships "
            "### Catchphrases",
            "Please respond to the following words of the curious human about the image in English using the "
            f"distinctive tone, manner and vocabulary of {name}:",
        ]
    return lines
