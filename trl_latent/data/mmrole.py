"""MMRole (Dai et al., ICLR 2025) as TRL datasets: the release layout, the paper's prompt and its splits.

The loader reads the MMRole release layout (`tests/data/mmrole-sample/` is a real slice of it; the embedded
synthetic task writes the same layout):

```
<root>/
  dialogues/in-distribution/<type>/<Name>_{COCO,script}.json   # JSON list of sessions {id, image, conversations}
  dialogues/out-of-distribution/<type>.json                    # one file per dialogue type
  profiles/in-distribution/detailed_profiles/<Name>.json       # {introduction, personality, experience, ...}
  profiles/out-of-distribution/detailed_profiles/<Name>.json
  images/<image>                                               # `image` paths are relative to this folder
```

`<type>` is `comment` (the paper's task), `human-role` or `inter-role`. A turn is `{"from" or "role": speaker,
"value": text}`; the human speaker is `human`, a character speaks under its display name (spaces), and its profile
file carries the same name with underscores.

Every answer of the session's character becomes one sample: the prompt is the paper's (a system message plus one
user turn holding the image and the templated text, docs/architecture.md section 5), the reference answer, the character and
its profile travel as extra columns for the judge reward ([`~trl_latent.rewards.judge.JudgeReward`]).

Splits (authors' code): the in-distribution sessions, in sorted file order, are shuffled with `random.Random(42)`
and cut at the fractions [0, 0.5) SFT, [0.5, 0.9) RL, [0.9, 1] in-distribution test; the out-of-distribution file
is the OOD test. A cut at fraction `f` of `n` sessions falls at `floor(f * n)` computed exactly (with `Fraction`),
so the sizes for 36 sessions are 18 / 14 / 4 and for 7 sessions 3 / 3 / 1.

```python
>>> from trl_latent.data.mmrole import load_mmrole
>>> splits = load_mmrole("path/to/MMRole_dataset")  # doctest: +SKIP
>>> sorted(splits)  # doctest: +SKIP
['id_test', 'ood_test', 'rl', 'sft']
```
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .files import read_json_file

# `to_sft` and the image and split helpers, shared with the PCogAlignBench loader, live in their own modules; they
# are re-exported here, where they used to live.
from .formats import to_sft
from .images import (
    check_on_missing_image,
    load_image,  # noqa: F401 (re-exported)
    load_image_or_skip,
    missing_image_error,
    unreadable_image_error,  # noqa: F401 (re-exported)
)
from .mmrole_prompts import (
    HUMAN,
    MMROLE_EVAL_SECTIONS,
    MMROLE_EVAL_SYSTEM_PROMPT,
    MMROLE_EVAL_USER_TEMPLATE,
    PAPER_SYSTEM_PROMPT,
    PAPER_USER_TEMPLATE,
    PROFILE_FIELDS,
    PROFILE_LABELS,
    TEMPLATES,
    build_mmrole_prompt,
    format_history,
    text_content,
    user_content,
)
from .splits import fraction_bounds, split_by_fractions

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "HUMAN",
    "MMROLE_EVAL_SECTIONS",
    "MMROLE_EVAL_SYSTEM_PROMPT",
    "MMROLE_EVAL_USER_TEMPLATE",
    "PAPER_SYSTEM_PROMPT",
    "PAPER_USER_TEMPLATE",
    "PROFILE_FIELDS",
    "PROFILE_LABELS",
    "SPLITS",
    "TEMPLATES",
    "MMRoleFormatError",
    "MMRoleSession",
    "MMRoleStats",
    "build_mmrole_prompt",
    "format_history",
    "fraction_bounds",
    "load_mmrole",
    "read_mmrole_eval_profiles",
    "read_mmrole_profile",
    "read_mmrole_sessions",
    "session_samples",
    "split_by_fractions",
    "text_content",
    "to_sft",
    "user_content",
]

logger = logging.getLogger(__name__)

DIALOGUE_TYPES = ("comment", "human-role", "inter-role")
DEFAULT_IMAGE_SIZE = (280, 420)  # (width, height) as PIL's `resize` takes it: the authors' `image.resize((280, 420))`
SPLIT_FRACTIONS = {"sft": (0.0, 0.5), "rl": (0.5, 0.9), "id_test": (0.9, 1.0)}
SPLITS = ("sft", "rl", "id_test", "ood_test")
TEST_SPLITS = ("id_test", "ood_test")
# Image folders of the release that do not name a script (film, series, book) the character comes from.
_NOT_A_SCRIPT = {"COCO", "Hypothetical_Characters"}


class MMRoleFormatError(ValueError):
    """The files under an MMRole root do not follow the release layout."""


# Keys a session's turns are found under by mistake (a typo, or another dataset's convention).
_CONVERSATION_KEY_VARIANTS = (
    "conversation",
    "Conversations",
    "Conversation",
    "convs",
    "dialogue",
    "turns",
    "messages",
)


@dataclass
class MMRoleStats:
    """What the loader read and what it left out; every count but `files`, `sessions` and `samples` is of skipped
    sessions: `empty_sessions` (no turns), `unanswered_sessions` (no character answer, so no reference: about 4% of
    the release's in-distribution comment sessions), `misnamed_sessions` (turns under a key other than
    `conversations`), `missing_images` and `unreadable_images` (with `on_missing_image="skip"`)."""

    files: int = 0
    sessions: int = 0
    empty_sessions: int = 0
    unanswered_sessions: int = 0
    misnamed_sessions: int = 0
    missing_images: int = 0
    unreadable_images: int = 0
    samples: int = 0
    split_sessions: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class MMRoleSession:
    """One MMRole session after reading: speakers are normalised, the character is the (last) non-human speaker."""

    id: str
    image: str
    turns: list[tuple[str, str]]
    character: str
    dialogue_type: str
    distribution: str  # "in" or "out"
    source: str


# ------------------------------------------------------------------------------------------------------ helpers
def _read_json(path: Path, what: str = "MMRole file", expect: str = "JSON") -> Any:
    return read_json_file(path, what, expect=expect, error_cls=MMRoleFormatError)


# ------------------------------------------------------------------------------------------------------ reading
def _dialogue_files(root: Path, distribution: str, dialogue_type: str) -> list[Path]:
    if dialogue_type not in DIALOGUE_TYPES:
        raise ValueError(f"Unknown MMRole dialogue type {dialogue_type!r}; choose from {DIALOGUE_TYPES}.")
    if distribution == "in":
        folder = root / "dialogues" / "in-distribution" / dialogue_type
        if not folder.is_dir():
            raise FileNotFoundError(
                f"No in-distribution {dialogue_type!r} dialogues under {root}: expected the folder {folder}. "
                f"Point `root` at the MMRole dataset folder (the one holding dialogues/, profiles/ and images/)."
            )
        files = sorted(folder.glob("*.json"))
        if not files:
            raise FileNotFoundError(f"The folder {folder} holds no .json dialogue files.")
        return files
    path = root / "dialogues" / "out-of-distribution" / f"{dialogue_type}.json"
    return [path] if path.is_file() else []


def _speaker(turn: Any, where: str) -> tuple[str, str]:
    if not isinstance(turn, dict):
        raise MMRoleFormatError(f"{where}: a turn must be an object with 'from' or 'role' and 'value', got {turn!r}.")
    speaker = turn.get("from", turn.get("role"))
    if speaker is None:
        raise MMRoleFormatError(f"{where}: a turn has neither a 'from' nor a 'role' key: {turn!r}.")
    text = turn.get("value")
    if not isinstance(text, str):
        raise MMRoleFormatError(f"{where}: a turn has no text 'value': {turn!r}.")
    return str(speaker), text


def read_mmrole_sessions(
    root: str | Path,
    distribution: str = "in",
    dialogue_types: Iterable[str] = ("comment",),
    stats: MMRoleStats | None = None,
    strict: bool = False,
) -> list[MMRoleSession]:
    """Read the sessions of the given dialogue types, in sorted file order.

    Skipped and counted in `stats`: sessions with no turns, sessions whose turns sit under a misspelled key
    (`conversation`, ...; warned about, naming the first), and sessions in which no character answers (no reference
    answer; the release has such sessions: ONE warning sums them up). With `strict=True` the last two raise instead.
    Raises [`MMRoleFormatError`] naming the file and session for a dialogue file that is not a list, a session that is
    not an object or has no `image`, and a turn without speaker or text.
    """
    root = Path(root)
    if distribution not in ("in", "out"):
        raise ValueError(f"distribution must be 'in' or 'out', got {distribution!r}.")
    stats = stats if stats is not None else MMRoleStats()
    sessions, unanswered, misnamed = [], [], []
    for dialogue_type in dialogue_types:
        for path in _dialogue_files(root, distribution, dialogue_type):
            data = _read_json(path, "MMRole dialogue file", "a JSON list of sessions {id, image, conversations}")
            if not isinstance(data, list):
                raise MMRoleFormatError(
                    f"{path} must hold a JSON list of sessions {{id, image, conversations}}, got a "
                    f"{type(data).__name__}."
                )
            stats.files += 1
            for index, raw in enumerate(data):
                where = f"{path} (session {index})"
                if not isinstance(raw, dict):
                    raise MMRoleFormatError(f"{where}: a session must be an object, got {type(raw).__name__}.")
                session_id = str(raw.get("id", f"{path.stem}_{index}"))
                where = f"{path} (session {session_id!r})"
                stats.sessions += 1
                if "conversations" not in raw:
                    variant = next((k for k in _CONVERSATION_KEY_VARIANTS if k in raw), None)
                    if variant is not None:
                        message = (
                            f"{where} holds its turns under {variant!r}, not 'conversations'; rename the key to read "
                            "the session"
                        )
                        if strict:
                            raise MMRoleFormatError(message + ".")
                        stats.misnamed_sessions += 1
                        misnamed.append(message)
                        continue
                conversations = raw.get("conversations") or []
                if not isinstance(conversations, list):
                    raise MMRoleFormatError(
                        f"{where}: 'conversations' must be a list of turns, got a {type(conversations).__name__}."
                    )
                if not conversations:
                    stats.empty_sessions += 1
                    continue
                if "image" not in raw:
                    raise MMRoleFormatError(f"{where} has no 'image' path.")
                turns = [_speaker(turn, where) for turn in conversations]
                characters = [speaker for speaker, _ in turns if speaker != HUMAN]
                # The session's character is its last non-human speaker (authors' code); in inter-role dialogues
                # the other character's turns are context only.
                character = characters[-1] if characters else None
                if character is None or not any(s == character and t.strip() for s, t in turns[1:]):
                    if strict:
                        raise MMRoleFormatError(
                            f"{where} has no answer from a character after a question, so it has no reference answer "
                            "(strict=True; the default skips and counts such sessions)."
                        )
                    stats.unanswered_sessions += 1
                    unanswered.append(where)
                    continue
                sessions.append(
                    MMRoleSession(
                        id=session_id,
                        image=str(raw["image"]),
                        turns=turns,
                        character=character,
                        dialogue_type=dialogue_type,
                        distribution=distribution,
                        source=str(path),
                    )
                )
    if misnamed:
        logger.warning(
            "MMRole: skipped %d session(s) whose turns are under a misspelled key (first: %s).",
            len(misnamed),
            misnamed[0],
        )
    if unanswered:
        logger.warning(
            "MMRole: skipped %d %s-distribution session(s) without a character answer (no reference answer; the "
            "release has such sessions), e.g. %s. Pass strict=True to raise instead.",
            len(unanswered),
            distribution,
            unanswered[0],
        )
    return sessions


def read_mmrole_profile(root: str | Path, distribution: str, character: str) -> dict[str, str]:
    """The five-field profile of `character` (display name; the file name uses underscores)."""
    folder = Path(root) / "profiles" / f"{'in' if distribution == 'in' else 'out-of'}-distribution"
    folder = folder / "detailed_profiles"
    path = folder / f"{character.replace(' ', '_')}.json"
    if not path.is_file():
        raise MMRoleFormatError(
            f"No profile for character {character!r}: expected {path}. MMRole profiles are named after the "
            f"character with spaces replaced by underscores; add the file or remove the character's dialogues."
        )
    profile = _read_json(path, "MMRole profile", "a JSON object with the fields " + ", ".join(PROFILE_FIELDS))
    if not isinstance(profile, dict):
        raise MMRoleFormatError(f"The profile {path} must be a JSON object with the fields {PROFILE_FIELDS}.")
    missing = [key for key in PROFILE_FIELDS if not isinstance(profile.get(key), str)]
    if missing:
        raise MMRoleFormatError(f"The profile {path} lacks the text field(s) {missing}; it needs {PROFILE_FIELDS}.")
    return {key: profile[key] for key in PROFILE_FIELDS}


def read_mmrole_eval_profiles(root: str | Path, distribution: str) -> tuple[dict[str, str], dict[str, str]]:
    """What MMRole's released evaluation prompts are built from: `profiles/<split>/profiles.json` (character ->
    short markdown profile) and `profiles/<split>/roles.json` (work -> characters), as `(profiles, work of each
    character)`. A file that is absent gives an empty mapping."""
    folder = Path(root) / "profiles" / f"{'in' if distribution == 'in' else 'out-of'}-distribution"
    profiles, works = {}, {}
    path = folder / "profiles.json"
    if path.is_file():
        profiles = _read_json(path, "MMRole profiles file", "a JSON object character -> profile text")
        if not isinstance(profiles, dict) or not all(isinstance(v, str) for v in profiles.values()):
            raise MMRoleFormatError(f"{path} must be a JSON object mapping each character to its profile text.")
    path = folder / "roles.json"
    if path.is_file():
        roles = _read_json(path, "MMRole roles file", "a JSON object work -> list of characters")
        if not isinstance(roles, dict) or not all(isinstance(v, list) for v in roles.values()):
            raise MMRoleFormatError(f"{path} must be a JSON object mapping each work to a list of its characters.")
        works = {str(character): str(work) for work, characters in roles.items() for character in characters}
    return profiles, works


def infer_scripts(sessions: Iterable[MMRoleSession]) -> dict[str, str]:
    """The script (film, series, book) of each character, read from the image folder of its script dialogues
    (`Harry_Potter/01.jpg` -> "Harry Potter"); characters only seen with COCO or hypothetical images get none."""
    scripts = {}
    for session in sessions:
        if not Path(session.source).stem.endswith("_script"):
            continue
        folder = Path(session.image).parts[0] if len(Path(session.image).parts) > 1 else None
        if folder and folder not in _NOT_A_SCRIPT:
            scripts.setdefault(session.character, folder.replace("_", " "))
    return scripts


# ------------------------------------------------------------------------------------------------------ samples
def session_samples(
    session: MMRoleSession,
    profile: dict[str, str],
    template: str = "paper",
    script: str | None = None,
    eval_profile: str | None = None,
) -> list[dict]:
    """One sample per answer of the session's character (one for a comment dialogue), without the image.
    `eval_profile`: the short profile text the `"mmrole_eval"` prompt uses in place of the five fields."""
    samples = []
    for position in range(1, len(session.turns)):
        speaker, answer = session.turns[position]
        if speaker != session.character or not answer.strip():
            continue
        question_speaker, question = session.turns[position - 1]
        history = session.turns[: position - 1]
        prompt = build_mmrole_prompt(
            session.character,
            eval_profile if template == "mmrole_eval" and eval_profile is not None else profile,
            question,
            history=history,
            template=template,
            question_speaker=question_speaker,
            script=script,
        )
        samples.append(
            {
                "id": session.id if position == 1 else f"{session.id}#{position}",
                "prompt": prompt,
                "reference": answer,
                "character": session.character,
                "profile": dict(profile),
                "question": question,
                "question_speaker": question_speaker,
                "history": format_history(history),
                "dialogue_type": session.dialogue_type,
                "distribution": session.distribution,
                "image_path": session.image,
            }
        )
    return samples


# ------------------------------------------------------------------------------------------------------ loading
def _usable_sessions(sessions, images_dir: Path, on_missing_image: str, stats: MMRoleStats) -> list[MMRoleSession]:
    kept = []
    for session in sessions:
        if not (images_dir / session.image).is_file():
            if on_missing_image == "error":
                raise missing_image_error(session.image, images_dir, f"session {session.id!r} ({session.source})")
            stats.missing_images += 1
            continue
        kept.append(session)
    return kept


@dataclass
class _PromptSources:
    """What prompts are built from, read once per load: detailed profiles, and for the `mmrole_eval` template the
    released short profiles and works (`profiles.json`, `roles.json`) and the scripts inferred or given."""

    root: Path
    template: str
    scripts: dict
    detailed: dict = field(default_factory=dict)
    released: dict = field(default_factory=dict)

    def profile(self, session: MMRoleSession) -> dict[str, str]:
        key = (session.distribution, session.character)
        if key not in self.detailed:
            self.detailed[key] = read_mmrole_profile(self.root, session.distribution, session.character)
        return self.detailed[key]

    def eval_profile_and_work(self, session: MMRoleSession) -> tuple[str | None, str | None]:
        if session.distribution not in self.released:
            self.released[session.distribution] = read_mmrole_eval_profiles(self.root, session.distribution)
        profiles, works = self.released[session.distribution]
        work = self.scripts.get("given", {}).get(session.character) or works.get(session.character)
        return profiles.get(session.character), work or self.scripts.get("inferred", {}).get(session.character)


def _build_dataset(sessions, images_dir, image_size, on_missing_image, sources: _PromptSources, stats):
    from datasets import Dataset

    rows = []
    for session in sessions:
        eval_profile, work = (None, None)
        if sources.template == "mmrole_eval":
            eval_profile, work = sources.eval_profile_and_work(session)
        samples = session_samples(session, sources.profile(session), sources.template, work, eval_profile)
        if not samples:
            continue
        record = f"session {session.id!r} ({session.source})"
        image = load_image_or_skip(session.image, images_dir, image_size, on_missing_image, record, MMRoleFormatError)
        if image is None:
            stats.unreadable_images += 1
            continue
        for sample in samples:
            rows.append({**sample, "image": image})
    stats.samples += len(rows)
    if not rows:
        return None
    return Dataset.from_list(rows)


def load_mmrole(
    root: str | Path,
    *,
    splits: Sequence[str] = SPLITS,
    dialogue_types: Sequence[str] = ("comment",),
    template: str = "paper",
    image_size: tuple[int, int] | None = DEFAULT_IMAGE_SIZE,
    images_dir: str | Path | None = None,
    on_missing_image: str = "error",
    seed: int = 42,
    fractions: dict[str, tuple[float, float]] | None = None,
    scripts: dict[str, str] | None = None,
    strict: bool = False,
    return_stats: bool = False,
):
    """Load MMRole as a `DatasetDict` of TRL prompt datasets.

    Each split has the columns `prompt` (system + user conversation, the user turn holding a `{"type": "image"}`
    part), `image` (PIL, resized), `reference` (the character's answer), `character`, `profile` (the five fields),
    `question`, `question_speaker`, `history`, `id`, `dialogue_type`, `distribution` and `image_path`.
    [`~trl_latent.data.formats.to_sft`] turns a split into the SFT form (`messages` with the reference as the assistant
    turn, `images`).

    Args:
        root (`str` or `Path`):
            The MMRole dataset folder (holding `dialogues/`, `profiles/` and `images/`).
        splits (`Sequence[str]`, *optional*, defaults to `("sft", "rl", "id_test", "ood_test")`):
            Which splits to build; only the files they need are read (`("ood_test",)` loads the out-of-distribution
            test set alone). `ood_test` is left out, with a warning, when the OOD dialogue file is absent and other
            splits were asked for; asked for alone, its absence raises.
        dialogue_types (`Sequence[str]`, *optional*, defaults to `("comment",)`):
            MMRole dialogue types to read: `"comment"` (the paper's task), `"human-role"`, `"inter-role"`.
        template (`str`, *optional*, defaults to `"paper"`):
            `"paper"` or `"mmrole_eval"`, see [`build_mmrole_prompt`]. `"mmrole_eval"` builds the prompt as MMRole's
            released evaluation records are: the short profile of `profiles/<split>/profiles.json` and the work named
            in `profiles/<split>/roles.json` ("Please step into the shoes of X from <work>"); without those files it
            falls back to the detailed profile's sections and the script inferred from the image folders.
        image_size (`tuple[int, int]` or `None`, *optional*, defaults to `(280, 420)`):
            (width, height) every image is resized to; `None` keeps the original size.
        images_dir (`str` or `Path`, *optional*):
            The folder session `image` paths are relative to; defaults to `root / "images"`.
        on_missing_image (`str`, *optional*, defaults to `"error"`):
            What to do with a session whose image is missing **or unreadable** (truncated, not an image): `"error"`
            raises naming the file, the session and the images folder; `"skip"` leaves the session out and counts it
            (`missing_images`, `unreadable_images`). A missing image is found before the split; an unreadable one
            while its split is built, so it leaves only that split.
        seed (`int`, *optional*, defaults to `42`):
            Seed of the session shuffle before the in-distribution split.
        fractions (`dict[str, tuple[float, float]]`, *optional*):
            Fraction ranges of the in-distribution splits; defaults to `{"sft": (0, 0.5), "rl": (0.5, 0.9),
            "id_test": (0.9, 1)}`.
        scripts (`dict[str, str]`, *optional*):
            Character -> work for the `"mmrole_eval"` template; taken from `roles.json`, or inferred from the script
            image folders, otherwise.
        strict (`bool`, *optional*, defaults to `False`):
            Raise on a session without a character answer, or with its turns under a misspelled key, instead of
            skipping and counting it (one warning per kind).
        return_stats (`bool`, *optional*, defaults to `False`):
            Also return the [`MMRoleStats`] (files, sessions, what was skipped and why, samples).
    """
    from datasets import DatasetDict

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"MMRole root {root} does not exist; point it at the MMRole dataset folder.")
    check_on_missing_image(on_missing_image)
    if template not in TEMPLATES:
        raise ValueError(f"Unknown MMRole prompt template {template!r}; choose from {TEMPLATES}.")
    fractions = dict(SPLIT_FRACTIONS if fractions is None else fractions)
    unknown = [name for name in splits if name not in {*fractions, "ood_test"}]
    if unknown:
        raise ValueError(f"Unknown MMRole split(s) {unknown}; choose from {sorted({*fractions, 'ood_test'})}.")
    images_dir = Path(images_dir) if images_dir is not None else root / "images"

    stats = MMRoleStats()
    id_splits = [name for name in splits if name != "ood_test"]
    id_sessions, ood_sessions = [], []
    if id_splits:
        id_sessions = read_mmrole_sessions(root, "in", dialogue_types, stats, strict=strict)
        id_sessions = _usable_sessions(id_sessions, images_dir, on_missing_image, stats)
    if "ood_test" in splits:
        if not any(_dialogue_files(root, "out", t) for t in dialogue_types):
            expected = root / "dialogues" / "out-of-distribution" / f"{dialogue_types[0]}.json"
            if not id_splits:
                raise FileNotFoundError(
                    f"The ood_test split needs the out-of-distribution dialogues {expected}, which do not exist. "
                    "Point `root` at the MMRole dataset folder."
                )
            logger.warning("%s does not exist; the ood_test split is left out.", expected)
        ood_sessions = read_mmrole_sessions(root, "out", dialogue_types, stats, strict=strict)
        ood_sessions = _usable_sessions(ood_sessions, images_dir, on_missing_image, stats)
    sources = _PromptSources(
        root,
        template,
        {"inferred": {**infer_scripts(id_sessions), **infer_scripts(ood_sessions)}, "given": scripts or {}},
    )

    by_split = split_by_fractions(id_sessions, {k: v for k, v in fractions.items() if k in splits}, seed)
    if ood_sessions:
        by_split["ood_test"] = ood_sessions
    result = DatasetDict()
    for name in splits:
        if name not in by_split:
            continue
        stats.split_sessions[name] = len(by_split[name])
        dataset = _build_dataset(by_split[name], images_dir, image_size, on_missing_image, sources, stats)
        if dataset is None:
            logger.warning("The MMRole %s split is empty (%d sessions); it is left out.", name, len(by_split[name]))
            continue
        result[name] = dataset
    if stats.empty_sessions:
        logger.info("MMRole: skipped %d session(s) without turns.", stats.empty_sessions)
    if stats.missing_images or stats.unreadable_images:
        logger.warning(
            "MMRole: skipped %d session(s) with a missing image and %d with an unreadable one (on_missing_image="
            "'skip').",
            stats.missing_images,
            stats.unreadable_images,
        )
    return (result, stats) if return_stats else result
