"""The text role-play task's rule reward: content and voice with partial credit, no judge.

`reward = 0.5 * content + 0.5 * voice`, times the penalties, in [0, 1]:

| part | score | rule |
|---|---|---|
| content | 1 | the answer names what the question asks and nothing that contradicts it: the asked object's colour (colour), its count as a word or a digit (count), an animal of the scene (animal), a food of the scene (food), two objects of the scene (notice) |
| content | 0.5 | right but hedged: the right colour or count together with another colour or count; a right animal or food together with one the scene does not have; only one object for the notice question |
| content | 0 | wrong (another colour or count, an animal or food not in the scene) or off-topic (nothing of the asked kind) |
| voice | +0.5 | the character's own catchphrase |
| voice | +0.25 each | its own voice words, at most two counted |
| voice | -0.5 | any other character's catchphrase or voice word (floored at 0) |
| penalty | x0 | empty answer |
| penalty | x0.5 | a format break (a chat special token or a speaker tag such as "User:") |
| penalty | x0.5 | rambling: more than `MAX_WORDS` words |

An answer **succeeds** when its reward is at least `SUCCESS_BAR` (0.75): right content with at least half the voice,
or hedged content with the full voice. Every answer of the task's own patterns scores 1.0.

```python
>>> from trl_latent.experiments.text_roleplay.reward import score
>>> scene = '{"setting":"a sunny park","objects":[["dog","brown",2],["kite","red",1],["duck","yellow",1],["apple","green",3]]}'
>>> score("Shiver me timbers! The kite is red. Aye, a treasure fit for my deck, matey!", "Captain Mara Flint", "colour", scene, "kite")["reward"]
1.0
>>> score("The kite is red.", "Captain Mara Flint", "colour", scene, "kite")["reward"]
0.5
```

`text_roleplay_reward(completions, character, kind, scene, target, **kwargs)` is the same rule with TRL's
reward-function signature (TRL passes the dataset's columns as keyword arguments).
"""

from __future__ import annotations

import re
from functools import cache

from .characters import ALL_CHARACTERS
from .task import COLOURS, NUMBER_WORDS, OBJECTS, Scene

__all__ = ["MAX_WORDS", "SUCCESS_BAR", "score", "text_roleplay_reward"]

SUCCESS_BAR = 0.75
MAX_WORDS = 60
CATCHPHRASE_SCORE, VOICE_WORD_SCORE, VOICE_WORDS_COUNTED, FOREIGN_VOICE_PENALTY = 0.5, 0.25, 2, 0.5

_FORMAT_BREAK = re.compile(r"<\|[a-z_]+\|?>?|\b(?:user|assistant|system|human)\s*:", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
# count words and digits the count question can be answered with (the task's counts are 2-4; "one" is left out, it is
# more often a pronoun than a count)
_NUMBERS = {**{w: k for k, w in NUMBER_WORDS.items()}, **{str(k): k for k in range(2, 10)}}
_NUMBERS |= {"five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}


def _normalise(text: str) -> str:
    return " " + " ".join(_WORD.findall(text.lower())) + " "


def _has(text: str, phrase: str) -> bool:
    """Whether the normalised `text` holds `phrase` as whole words."""
    return _normalise(phrase) in text


@cache
def _voice_of(character: str) -> tuple[str, tuple[str, ...]]:
    if character not in ALL_CHARACTERS:
        raise KeyError(f"Unknown character {character!r}; known: {', '.join(ALL_CHARACTERS)}")
    c = ALL_CHARACTERS[character]
    return c["catchphrase"], tuple(c["voice_words"])


def _mentioned(text: str, nouns) -> set[str]:
    return {n for n in nouns if _has(text, n) or _has(text, OBJECTS[n][0])}


def content_score(text: str, kind: str, scene: Scene, target: str) -> float:
    """The content part of the table on a normalised text."""
    if kind == "colour":
        right = scene.find(target).colour
        others = {c for c in COLOURS if c != right and _has(text, c)}
        return (1.0 if not others else 0.5) if _has(text, right) else 0.0
    if kind == "count":
        right = scene.find(target).count
        said = {v for w, v in _NUMBERS.items() if _has(text, w)}
        return (1.0 if said == {right} else 0.5) if right in said else 0.0
    present = {o.noun for o in scene.objects}
    if kind in ("animal", "food"):
        of_kind = {n for n, (_, cat) in OBJECTS.items() if cat == kind}
        named = _mentioned(text, of_kind)
        right, wrong = named & present, named - present
        return (1.0 if not wrong else 0.5) if right else 0.0
    if kind == "notice":
        named = _mentioned(text, OBJECTS)
        right, wrong = named & present, named - present
        base = 1.0 if len(right) >= 2 else 0.5 if right else 0.0
        return base * (0.5 if wrong else 1.0)
    raise ValueError(f"Unknown question kind {kind!r}")


def voice_score(text: str, character: str) -> float:
    """The voice part of the table on a normalised text."""
    catchphrase, words = _voice_of(character)
    own = CATCHPHRASE_SCORE * _has(text, catchphrase)
    own += VOICE_WORD_SCORE * min(VOICE_WORDS_COUNTED, sum(_has(text, w) for w in words))
    foreign = any(
        _has(text, other_phrase) or any(_has(text, w) for w in other_words)
        for other in ALL_CHARACTERS
        if other != character
        for other_phrase, other_words in [_voice_of(other)]
    )
    return max(0.0, own - FOREIGN_VOICE_PENALTY * foreign)


def score(completion: str, character: str, kind: str, scene: str | Scene, target: str = "") -> dict:
    """The reward of one answer and its parts: `reward`, `content`, `voice`, `format_break`, `rambling`, `success`."""
    scene = Scene.from_json(scene) if isinstance(scene, str) else scene
    text = _normalise(completion)
    if not text.strip():
        return {
            "reward": 0.0,
            "content": 0.0,
            "voice": 0.0,
            "format_break": False,
            "rambling": False,
            "success": False,
        }
    content, voice = content_score(text, kind, scene, target), voice_score(text, character)
    format_break = bool(_FORMAT_BREAK.search(completion))
    rambling = len(text.split()) > MAX_WORDS
    reward = (0.5 * content + 0.5 * voice) * (0.5 if format_break else 1.0) * (0.5 if rambling else 1.0)
    return {
        "reward": reward,
        "content": content,
        "voice": voice,
        "format_break": format_break,
        "rambling": rambling,
        "success": reward >= SUCCESS_BAR,
    }


def _completion_text(completion) -> str:
    """A completion as TRL passes it: a string (standard format) or a list of messages (conversational format)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(m.get("content", "") if isinstance(m.get("content"), str) else "" for m in completion)
    raise TypeError(f"A completion must be a string or a list of messages, got {type(completion).__name__}")


def text_roleplay_reward(completions, character, kind, scene, target=None, **kwargs) -> list[float]:
    """TRL reward function: the rule reward of each completion, reading the rows' `character`, `kind`, `scene` and
    `target` columns."""
    targets = target if target is not None else [""] * len(completions)
    return [
        score(_completion_text(c), ch, k, s, t or "")["reward"]
        for c, ch, k, s, t in zip(completions, character, kind, scene, targets, strict=True)
    ]
