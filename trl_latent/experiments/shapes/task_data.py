"""The shapes task's data: dialogues sampled in memory as TRL datasets ([`synthetic_sft_dataset`],
[`synthetic_rl_dataset`]), the task written to disk in the MMRole release layout with its paired and text-only
pretraining corpora ([`write_synthetic_task`]), and the text the tiny tokenizer is trained on ([`tokenizer_corpus`]).
The scenes, characters and answers they are made of are in `scenes.py`.

```python
>>> from trl_latent.experiments.shapes.task_data import synthetic_sft_dataset
>>> len(synthetic_sft_dataset(4))
4
```
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .scenes import (
    ALL_CHARACTERS,
    CHARACTERS,
    COLOURS,
    HELD_OUT_COMBOS,
    MAX_COUNT,
    OOD_CHARACTERS,
    PROFILE_FIELDS,
    QUESTIONS,
    SHAPES,
    ShapesScene,
    _characters,
    _check_max_count,
    _cycled,
    _image_size,
    _rng,
    all_answers,
    answer_patterns,
    character_answer,
    character_profile,
    character_system_prompt,
    combos_of,
    draw_scene,
    paired_combos,
    sample_scene,
    underscored,
)


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
    (`trl_latent.experiments.shapes.general_text`): every combination and every character's voice, the out-of-distribution ones
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

    from .general_text import CAPTION_QUESTIONS, GENERIC_SYSTEM, general_text_record, picture_record

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
    from .general_text import general_lines

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
