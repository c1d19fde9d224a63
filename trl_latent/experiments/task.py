"""The embedded "shapes role-play" task: a synthetic MMRole-style benchmark that needs no network.

Images show one or more coloured shapes drawn with PIL; characters with MMRole-style profiles (the five fields
`introduction`, `personality`, `experience`, `relationship`, `catchphrase`) comment on them in their own voice (a
catchphrase, tone words and a sentence pattern of their own). A reference answer always names what is in the image:
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

# name -> the five MMRole profile fields, plus the voice the reference answers use: `tone_words` (two words only this
# character uses) and `answer` (its sentence pattern; `{phrase}` becomes e.g. "two red circles").
CHARACTERS: dict[str, dict[str, Any]] = {
    "Captain Rolo": {
        "introduction": "Captain Rolo is a cheerful sea captain who sails a small red boat.",
        "personality": "Loud, bold and brave, and always hopeful.",
        "experience": "He has sailed every sea and counted every wave.",
        "relationship": "He is an old friend of Madame Plume.",
        "catchphrase": "Ahoy, matey!",
        "tone_words": ("bold", "brave"),
        "answer": "Ahoy, matey! I spot {phrase} on deck. A bold and brave sight!",
    },
    "Madame Plume": {
        "introduction": "Madame Plume is a painter who lives in a quiet tower full of colours.",
        "personality": "Gentle, soft and a little dreamy.",
        "experience": "She has painted the same garden for forty years.",
        "relationship": "She teaches Professor Quill to paint.",
        "catchphrase": "How delightful!",
        "tone_words": ("soft", "dreamy"),
        "answer": "How delightful! I see {phrase}, soft and dreamy like my garden.",
    },
    "Professor Quill": {
        "introduction": "Professor Quill is a scholar of geometry who measures everything.",
        "personality": "Careful, precise and fond of facts.",
        "experience": "He wrote a book about the angles of every shape.",
        "relationship": "He argues kindly with Captain Rolo.",
        "catchphrase": "Quite remarkable indeed.",
        "tone_words": ("precise", "careful"),
        "answer": "Quite remarkable indeed. I count exactly {phrase}, a precise and careful result.",
    },
    "Pip the Robot": {
        "introduction": "Pip the Robot is a small helper robot who loves to scan things.",
        "personality": "Eager, happy and bright.",
        "experience": "Pip was built in a workshop full of spare parts.",
        "relationship": "Pip carries brushes for Madame Plume.",
        "catchphrase": "Beep boop, scan complete!",
        "tone_words": ("happy", "bright"),
        "answer": "Beep boop, scan complete! Pip detects {phrase}. Happy bright beeps!",
    },
}

# Held-out characters: they appear only in the out-of-distribution test.
OOD_CHARACTERS: dict[str, dict[str, Any]] = {
    "Granny Fern": {
        "introduction": "Granny Fern is a kind gardener who grows flowers of every colour.",
        "personality": "Warm, patient and wise; she calls everyone dearie.",
        "experience": "She has kept the village garden for sixty years.",
        "relationship": "She bakes bread for Pip the Robot.",
        "catchphrase": "Bless my boots!",
        "tone_words": ("warm", "dearie"),
        "answer": "Bless my boots! Dearie, I see {phrase}, as warm as fresh bread.",
    },
    "Sir Bramble": {
        "introduction": "Sir Bramble is a knight who guards a castle made of stone.",
        "personality": "Proud, noble and loyal; he speaks of his honour.",
        "experience": "He has won many tournaments.",
        "relationship": "He once rescued Captain Rolo from a storm.",
        "catchphrase": "By my sword!",
        "tone_words": ("noble", "honour"),
        "answer": "By my sword! Upon my honour, I behold {phrase}. A noble and loyal sight.",
    },
}

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

_CAPTIONS = (
    "There {be} {phrase} in the picture.",
    "The image shows {phrase} on a plain background.",
)
_CAPTION_QUESTIONS = ("Describe the picture.", "What is in this image?")
_TEXT_ONLY = (
    "{Phrase} sit on a white page.",
    "A drawing of {phrase} is simple and clear.",
    "Imagine {phrase}: the colour is {colour} and the shape is a {shape}.",
)
_TEXT_ONLY_PROMPT = "The following is a text."
_PAIRED_SYSTEM = "You are a helpful assistant."


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
def reference_answer(character: str, scene: ShapesScene) -> str:
    """The reference comment of `character` on `scene`: its catchphrase, the scene and its tone words."""
    return _character(character)["answer"].format(phrase=scene.phrase)


def character_profile(character: str) -> dict[str, str]:
    """The five MMRole profile fields of `character`."""
    profile = _character(character)
    return {key: profile[key] for key in PROFILE_FIELDS}


def character_system_prompt(character: str) -> str:
    """The short system prompt of the in-memory datasets: who to be, the catchphrase and the tone words.

    Short on purpose (the tiny model's speed depends on the sequence length); the paper's full MMRole prompt is built
    by the MMRole loader from the files [`write_synthetic_task`] writes.
    """
    profile = _character(character)
    tone = " and ".join(profile["tone_words"])
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
    """One comment dialogue of the task: `character` answers `question` about `image` (a drawing of `scene`)."""

    character: str
    scene: ShapesScene
    question: str
    answer: str
    image: Any = field(repr=False)


def sample_dialogues(n: int, seed: int = 0, image_size=56, characters=None, max_count: int = 1, split: str = ""):
    """`n` comment dialogues, deterministic in (`seed`, `split`): characters cycle, scenes and questions are drawn.

    Args:
        n (`int`): number of dialogues.
        seed (`int`, *optional*, defaults to `0`): seed; the same seed gives the same dialogues and images.
        image_size (`int` or `tuple[int, int]`, *optional*, defaults to `56`): side, or (width, height).
        characters (`str` or `list[str]`, *optional*): `"id"` (default), `"ood"`, `"all"` or a list of names.
        max_count (`int`, *optional*, defaults to `1`): most shapes per image (1-4).
        split (`str`, *optional*): a name mixed into the seed, so splits of one seed differ.
    """
    if n < 1:
        raise ValueError(f"n={n} must be at least 1.")
    _check_max_count(max_count)
    names = _characters(characters)
    samples = []
    for i in range(n):
        rng = _rng("dialogue", seed, split, i)
        character = names[i % len(names)]
        scene = sample_scene(rng, max_count)
        question = rng.choice(QUESTIONS)[0]
        image = draw_scene(scene, image_size, seed=f"{seed}/{split}/{i}")
        samples.append(ShapesSample(character, scene, question, reference_answer(character, scene), image))
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
    }


def synthetic_sft_dataset(n: int, seed: int = 0, image_size=56, characters=None, max_count: int = 1, split="sft"):
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
    for sample in sample_dialogues(n, seed, image_size, characters, max_count, split):
        messages = _prompt_messages(sample) + [
            {"role": "assistant", "content": [{"type": "text", "text": sample.answer}]}
        ]
        rows.append({"messages": messages, "images": [sample.image], **_metadata(sample)})
    return Dataset.from_list(rows)


def synthetic_rl_dataset(n: int, seed: int = 0, image_size=56, characters=None, max_count: int = 1, split="rl"):
    """A `datasets.Dataset` of `n` prompts in TRL's VLM GRPO format, for `trl.GRPOTrainer` with the rubric reward.

    Columns: `prompt` (system and user messages; the user content holds `{"type": "image"}` and the question), `image`
    (a PIL image), `reference` (the reference answer) and `character`, `colour`, `shape`, `count`, `question`. TRL
    passes the extra columns to reward functions as keyword arguments.
    """
    from datasets import Dataset

    rows = [
        {"prompt": _prompt_messages(s), "image": s.image, "reference": s.answer, **_metadata(s)}
        for s in sample_dialogues(n, seed, image_size, characters, max_count, split)
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

    Dialogues cover every colour/shape combination; the paired corpus leaves out `held_out_combos` and cycles through
    the others (all of them appear once `n_paired` >= their number); the text-only corpus cycles through all 24. The
    same `seed` writes byte-identical files.

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

    def dialogue_scene(*parts) -> tuple[ShapesScene, str]:
        rng = _rng("session", seed, *parts)
        return sample_scene(rng, max_count), rng.choice(QUESTIONS)[0]

    # In-distribution dialogues: two files per character, like MMRole's `_COCO` and `_script` files.
    dialogue_files, n_id_sessions = [], 0
    for name in CHARACTERS:
        for source, style in (("shapes", "from"), ("script", "role")):
            sessions = []
            for i in range(sessions_per_file):
                session_id = f"{underscored(name)}_comment_{source}_{i}"
                scene, question = dialogue_scene("id", name, source, i)
                image = f"shapes/{session_id}.png"
                _save_png(draw_scene(scene, (width, height), seed=f"{seed}/{session_id}"), root / "images" / image)
                extra = None
                if source == "script":
                    extra = {
                        "role_info": "",
                        "place_info": "A sheet of drawing paper",
                        "scene_info": f"A drawing of {scene.phrase}.",
                    }
                answer = reference_answer(name, scene)
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
            scene, question = dialogue_scene("ood", name, i)
            image = f"shapes/{session_id}.png"
            _save_png(draw_scene(scene, (width, height), seed=f"{seed}/{session_id}"), root / "images" / image)
            ood_sessions.append(_session(session_id, image, question, name, reference_answer(name, scene), "mixed"))
    ood_file = "dialogues/out-of-distribution/comment.json"
    _dump(ood_sessions, root / ood_file)

    profile_files = []
    for split, table in (("in-distribution", CHARACTERS), ("out-of-distribution", OOD_CHARACTERS)):
        for name in table:
            relative = f"profiles/{split}/detailed_profiles/{underscored(name)}.json"
            _dump(character_profile(name), root / relative)
            profile_files.append(relative)

    # Paired image-text corpus: captions and in-character comments, never a held-out combination.
    paired = []
    paired_order = _cycled(shown, n_paired, _rng("paired-order", seed))
    for i in range(n_paired):
        rng = _rng("paired", seed, i)
        colour, shape = paired_order[i]
        scene = ShapesScene(colour, shape, rng.randint(1, max_count))
        image = f"images/paired/paired_{i:05d}.png"
        _save_png(draw_scene(scene, (width, height), seed=f"{seed}/paired/{i}"), root / image)
        if i % 2 == 0:
            be = "is" if scene.count == 1 else "are"
            question = rng.choice(_CAPTION_QUESTIONS)
            answer = rng.choice(_CAPTIONS).format(be=be, phrase=scene.phrase)
            system, kind = _PAIRED_SYSTEM, "caption"
        else:
            name = rng.choice(list(CHARACTERS))
            question, answer = rng.choice(QUESTIONS)[0], reference_answer(name, scene)
            system, kind = character_system_prompt(name), "mm_conversation"
        paired.append(
            {
                "id": f"shapes_paired_{i}",
                "images": [image],
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": f"<image>\n{question}"},
                    {"role": "assistant", "content": answer},
                ],
                "instance_type": kind,
            }
        )
    paired_file = "pretrain/paired.json"
    _dump(paired, root / paired_file)

    # Text-only corpus: every combination (held-out ones included), as plain text and as in-character lines of the
    # in-distribution characters.
    text_only = []
    text_order = _cycled([(c, s) for c in COLOURS for s in SHAPES], n_text_only, _rng("text-order", seed))
    for i in range(n_text_only):
        rng = _rng("text_only", seed, i)
        colour, shape = text_order[i]
        scene = ShapesScene(colour, shape, rng.randint(1, max_count))
        if i % 2 == 0:
            text = rng.choice(_TEXT_ONLY).format(
                phrase=scene.phrase, Phrase=scene.phrase.capitalize(), colour=colour, shape=shape
            )
            messages = [
                {"role": "system", "content": ""},
                {"role": "user", "content": _TEXT_ONLY_PROMPT},
                {"role": "assistant", "content": text},
            ]
            kind = "General"
        else:
            name = rng.choice(list(CHARACTERS))  # never an OOD character: they stay unseen until the OOD test
            messages = [
                {"role": "system", "content": character_system_prompt(name)},
                {"role": "user", "content": f"Tell me about {scene.phrase}."},
                {"role": "assistant", "content": reference_answer(name, scene)},
            ]
            kind = "dialogue"
        text_only.append({"id": f"shapes_text_{i}", "messages": messages, "instance_type": kind})
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
    """Text the tiny tokenizer's BPE merges are trained on: every sentence the task can produce.

    Lines are repeated roughly as often as the training data uses them (answers most, then prompts and chat-template
    role names), because a ~440-entry byte-level BPE has only ~180 merges: they should go to the words the model
    reads and writes most, which keeps sequences (and the tiny model's steps) short.
    """
    scenes = [ShapesScene(c, s, n) for c in COLOURS for s in SHAPES for n in range(1, MAX_COUNT + 1)]
    lines = []
    for name, profile in ALL_CHARACTERS.items():
        lines.append(f"[{name}]: ")
        lines.extend(profile[key] for key in PROFILE_FIELDS)
        for scene in scenes:
            lines.extend([reference_answer(name, scene)] * 3)
            lines.append(character_system_prompt(name))
    for question, _ in QUESTIONS:
        lines.extend([question] * 100)
    lines.extend(["system\n", "user\n", "assistant\n"] * 300)
    for scene in scenes:
        be = "is" if scene.count == 1 else "are"
        lines.extend(t.format(be=be, phrase=scene.phrase) for t in _CAPTIONS)
        lines.extend(
            t.format(phrase=scene.phrase, Phrase=scene.phrase.capitalize(), colour=scene.colour, shape=scene.shape)
            for t in _TEXT_ONLY
        )
        lines.append(f"Tell me about {scene.phrase}.")
        lines.append(f"A drawing of {scene.phrase}.")
    lines += list(_CAPTION_QUESTIONS) + [_TEXT_ONLY_PROMPT, _PAIRED_SYSTEM, "A sheet of drawing paper"]
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
