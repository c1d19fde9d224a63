"""An offline rubric reward for the embedded shapes role-play task, mirroring the LLM judge's dimensions.

The paper's reward asks an LLM judge to score the policy's answer and the reference answer from 1 to 10 on the
benchmark's dimensions, and returns Σ policy scores / Σ reference scores. The rubric here does the same with rules,
so RL on the synthetic task needs no judge and no network. Its four dimensions group MMRole's eight:

| dimension | MMRole dimensions it stands for | what it checks |
|---|---|---|
| `image_text_relevance` | image-text relevance, response accuracy | the right colour, shape and count are named, no wrong ones |
| `personality_tone` | personality, knowledge and tone consistency | the character's catchphrase and voice words, no other's |
| `fluency` | fluency, coherency | known words, no repeats, no garbage characters, a sensible length |
| `instruction_adherence` | instruction adherence | answers what the question asks, stays in character and in format |

Each score is a float in [1, 10]; the reference answers of the task score 10 on every dimension, so a reference
scores 1.0 against itself.

```python
>>> from trl_latent.experiments.shapes.reward import rubric_ratio
>>> ref = "Ahoy, matey! I spot two red circles on deck. A bold and brave sight!"
>>> rubric_ratio(ref, ref, character="Captain Rolo")
1.0
>>> rubric_ratio(ref.replace("red", "blue"), ref, character="Captain Rolo") < 1.0
True
```
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

from .scenes import (
    ALL_CHARACTERS,
    COLOURS,
    COUNT_WORDS,
    MIN_VOICE_WORDS,
    SHAPES,
    ShapesScene,
    all_answers,
    question_kind,
)
from .task_data import tokenizer_corpus

RUBRIC_DIMENSIONS = ("image_text_relevance", "personality_tone", "fluency", "instruction_adherence")

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
# Text a role-play answer must not contain: a speaker tag such as "[human]:" or "assistant:", or a special token.
_FORMAT_BREAK = re.compile(r"\[[^\]]*\]\s*:|\b(?:human|user|assistant|system)\s*:|<\|", re.IGNORECASE)
_OUT_OF_CHARACTER = re.compile(r"\bas an ai\b|\blanguage model\b|\bassistant\b", re.IGNORECASE)
_SHAPE_WORDS = {s: s for s in SHAPES} | {s + "s": s for s in SHAPES}


def _clip(score: float) -> float:
    return float(min(10.0, max(1.0, score)))


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@lru_cache(maxsize=1)
def _vocabulary() -> frozenset[str]:
    return frozenset(w for line in tokenizer_corpus() for w in _words(line))


def _voice(character: str) -> tuple[str, tuple[str, ...]]:
    profile = ALL_CHARACTERS[character]
    return profile["catchphrase"], tuple(profile["voice_words"])


def voice_checks(response: str, character: str) -> dict[str, bool]:
    """How `response` speaks as `character`: `catchphrase` (its own), `words` (at least `MIN_VOICE_WORDS` of its voice
    words), `clean` (no other character's catchphrase or voice word), `voice` (all three)."""
    catchphrase, voice_words = _voice(character)
    words = set(_words(response))
    checks = {
        "catchphrase": _has_phrase(response, catchphrase),
        "words": sum(w in words for w in voice_words) >= MIN_VOICE_WORDS,
        "clean": not any(
            _has_phrase(response, _voice(other)[0]) or words & set(_voice(other)[1])
            for other in ALL_CHARACTERS
            if other != character
        ),
    }
    checks["voice"] = all(checks.values())
    return checks


def _has_phrase(text: str, phrase: str) -> bool:
    # Whole words, case-insensitive, punctuation-insensitive: "ahoy matey" matches "Ahoy, matey!".
    pattern = r"\b" + r"\W+".join(map(re.escape, _words(phrase))) + r"\b"
    return re.search(pattern, text.lower()) is not None


def parse_scene(text: str) -> ShapesScene | None:
    """The scene a text names ("two red circles" -> `ShapesScene("red", "circle", 2)`), or `None` when the text does
    not name one colour, one shape and one count of the task."""
    words = _words(text)
    colours = {w for w in words if w in COLOURS}
    shapes = {_SHAPE_WORDS[w] for w in words if w in _SHAPE_WORDS}
    counts = {w for w in words if w in COUNT_WORDS}
    if len(colours) != 1 or len(shapes) != 1:
        return None
    count = COUNT_WORDS.index(counts.pop()) + 1 if len(counts) == 1 else 1
    return ShapesScene(colours.pop(), shapes.pop(), count)


def infer_character(text: str) -> str | None:
    """The character whose catchphrase `text` contains (the first one found), or `None`."""
    for name in ALL_CHARACTERS:
        if _has_phrase(text, _voice(name)[0]):
            return name
    return None


# ------------------------------------------------------------------------------------------------- dimensions
def _attribute_points(mentioned: set[str], target: str, full: float) -> float:
    if target not in mentioned:
        return 0.0
    return full if len(mentioned) == 1 else full / 2  # right value, but wrong ones too


def image_text_relevance(response: str, scene: ShapesScene | None, reference: str = "") -> float:
    """3 points each for the right colour, shape and count (half when wrong ones are named too), plus 1. Without a
    scene, 1 + 9 × the word-overlap F1 with `reference`."""
    words = _words(response)
    if scene is None:
        return _clip(1 + 9 * _overlap_f1(words, _words(reference)))
    colours = {w for w in words if w in COLOURS}
    shapes = {_SHAPE_WORDS[w] for w in words if w in _SHAPE_WORDS}
    counts = {w for w in words if w in COUNT_WORDS}
    points = _attribute_points(colours, scene.colour, 3)
    points += _attribute_points(shapes, scene.shape, 3)
    points += _attribute_points(counts, COUNT_WORDS[scene.count - 1], 3)
    return _clip(1 + points)


def personality_tone(response: str, character: str | None, reference: str = "") -> float:
    """5 points for the character's catchphrase (a share of them for some of its words), 4 for using at least
    `MIN_VOICE_WORDS` of its voice words (a share for fewer); minus 3 for each other character's catchphrase and 1 for
    each of their voice words; plus 1. Any of the character's answer patterns scores 10. Without a character, 1 + 9 ×
    the word-overlap F1 with `reference`."""
    if character is None:
        return _clip(1 + 9 * _overlap_f1(_words(response), _words(reference)))
    catchphrase, voice_words = _voice(character)
    words = set(_words(response))
    if _has_phrase(response, catchphrase):
        points = 5.0
    else:
        phrase_words = _words(catchphrase)
        points = 3.0 * sum(w in words for w in phrase_words) / len(phrase_words)
    points += 4.0 * min(1.0, sum(w in words for w in voice_words) / MIN_VOICE_WORDS)
    for other in ALL_CHARACTERS:
        if other == character:
            continue
        other_phrase, other_words = _voice(other)
        points -= 3.0 * _has_phrase(response, other_phrase)
        points -= 1.0 * sum(w in words for w in other_words)
    return _clip(1 + points)


def fluency(response: str, reference: str = "", lengths: list[int] | None = None) -> float:
    """10, minus penalties for unknown words (up to 4), repeated word bigrams (up to 4), characters that are neither
    letters, digits, spaces nor punctuation (up to 5) and a length far from the right answers' (up to 3): `lengths`,
    the word counts of every right answer (default: the reference's)."""
    text = response.strip()
    words = _words(text)
    if not words:
        return 1.0
    vocabulary = _vocabulary() | set(_words(reference))
    penalty = 4.0 * sum(w not in vocabulary for w in words) / len(words)
    bigrams = list(zip(words, words[1:]))
    if bigrams:
        penalty += 4.0 * (1 - len(set(bigrams)) / len(bigrams))
    garbage = sum(not (ch.isalnum() or ch.isspace() or ch in ",.!?'\";:-") for ch in text)
    penalty += min(5.0, 10.0 * garbage / len(text))
    lengths = [n for n in (lengths or [len(_words(reference))]) if n > 0]
    if lengths:
        # Within a factor of sqrt(2) of the right answers' lengths is free; a factor of 2*sqrt(2) costs the full 3.
        low, high = min(lengths), max(lengths)
        off = max(0.0, math.log2(low / len(words)), math.log2(len(words) / high))
        penalty += 3.0 * min(1.0, max(0.0, off - 0.5))
    return _clip(10 - penalty)


def instruction_adherence(response: str, question: str | None = None) -> float:
    """5 points for answering what the question asks (colour, shape, count, or for "what" questions a colour and a
    shape), 4 for staying in character and in format (no speaker tags or special tokens, no assistant talk, a
    finished sentence); plus 1."""
    words = _words(response)
    if not words:
        return 1.0
    mentions = {
        "colour": any(w in COLOURS for w in words),
        "shape": any(w in _SHAPE_WORDS for w in words),
        "count": any(w in COUNT_WORDS for w in words),
    }
    kind = question_kind(question) if question else "what"
    points = 5.0 * mentions[kind] if kind != "what" else 2.5 * mentions["colour"] + 2.5 * mentions["shape"]
    form = 4.0
    form -= 2.0 * bool(_FORMAT_BREAK.search(response))
    form -= 1.0 * bool(_OUT_OF_CHARACTER.search(response))
    form -= 1.0 * (not response.strip().endswith((".", "!", "?")))
    return _clip(1 + points + max(0.0, form))


def _overlap_f1(words: list[str], reference: list[str]) -> float:
    if not words or not reference:
        return 0.0
    common = sum(min(words.count(w), reference.count(w)) for w in set(words))
    if common == 0:
        return 0.0
    precision, recall = common / len(words), common / len(reference)
    return 2 * precision * recall / (precision + recall)


# ------------------------------------------------------------------------------------------------------- API
def _resolve(reference: str, character: str | None, scene: ShapesScene | None):
    if character is not None and character not in ALL_CHARACTERS:
        raise ValueError(f"Unknown character {character!r} for the rubric; choose one of {sorted(ALL_CHARACTERS)}.")
    return scene if scene is not None else parse_scene(reference), character or infer_character(reference)


def score_dimensions(
    text: str,
    reference: str,
    character: str | None = None,
    question: str | None = None,
    scene: ShapesScene | None = None,
) -> dict[str, float]:
    """The four rubric scores (1-10) of one `text` judged against `reference`."""
    scene, character = _resolve(reference, character, scene)
    lengths = [len(_words(a)) for a in all_answers(character, scene)] if scene and character else None
    return {
        "image_text_relevance": image_text_relevance(text, scene, reference),
        "personality_tone": personality_tone(text, character, reference),
        "fluency": fluency(text, reference, lengths),
        "instruction_adherence": instruction_adherence(text, question),
    }


def rubric_scores(
    response: str,
    reference: str,
    character: str | None = None,
    question: str | None = None,
    scene: ShapesScene | None = None,
) -> dict[str, dict[str, float]]:
    """Score `response` and `reference` on the rubric's dimensions, like the judge scores a pair of answers.

    Args:
        response (`str`): the policy's answer.
        reference (`str`): the reference answer.
        character (`str`, *optional*): the character speaking; inferred from the reference's catchphrase if `None`.
        question (`str`, *optional*): the human's question; `None` counts as "what do you see?".
        scene (`ShapesScene`, *optional*): what the image shows; parsed from the reference if `None`.

    Returns:
        `dict`: `{"response": {dimension: score}, "reference": {dimension: score}}`, scores in [1, 10].
    """
    scene, character = _resolve(reference, character, scene)
    return {
        "response": score_dimensions(response, reference, character, question, scene),
        "reference": score_dimensions(reference, reference, character, question, scene),
    }


def rubric_ratio(response: str, reference: str, **kwargs) -> float:
    """The paper's reward for one answer: Σ response scores / Σ reference scores (keyword arguments as
    [`rubric_scores`])."""
    scores = rubric_scores(response, reference, **kwargs)
    return sum(scores["response"].values()) / sum(scores["reference"].values())


def completion_text(completion) -> str:
    """The text of a TRL completion: a string, or a conversational list of messages whose content is a string or a
    list of typed parts."""
    if isinstance(completion, str):
        return completion
    parts = []
    for message in completion:
        content = message.get("content") or ""
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(part.get("text") or "" for part in content if part.get("type") == "text")
    return "".join(parts)


def _last_user_text(prompt) -> str | None:
    if not isinstance(prompt, list):  # a plain-text prompt holds no separate question
        return None
    for message in reversed(prompt):
        if message.get("role") == "user":
            return completion_text([message])
    return None


def rubric_reward(prompts, completions, reference=None, character=None, **kwargs) -> list[float]:
    """The rubric as a TRL reward function: Σ response scores / Σ reference scores for each completion.

    Use it as `GRPOTrainer(reward_funcs=rubric_reward, ...)` on a dataset with a `reference` column (such as
    [`~trl_latent.experiments.shapes.task_data.synthetic_rl_dataset`]). TRL passes the other dataset columns as keyword arguments:
    `character`, `question` and `colour`/`shape`/`count` are used when present (the question is otherwise read from
    the prompt's last user message, the scene parsed from the reference, the character inferred from it).

    Args:
        prompts (`list`): the prompts (strings or conversations).
        completions (`list`): the completions (strings or conversations).
        reference (`list[str]`): the reference answers.
        character (`list[str]`, *optional*): the characters speaking.

    Returns:
        `list[float]`: one reward per completion.
    """
    if reference is None:
        raise ValueError(
            "rubric_reward needs the reference answers: give the dataset a `reference` column (TRL passes dataset "
            "columns to reward functions as keyword arguments)."
        )
    n = len(completions)
    characters = character if character is not None else [None] * n
    questions = kwargs.get("question") or [_last_user_text(p) for p in prompts]
    colours, shapes, counts = kwargs.get("colour"), kwargs.get("shape"), kwargs.get("count")
    rewards = []
    for i in range(n):
        scene = ShapesScene(colours[i], shapes[i], int(counts[i])) if colours and shapes and counts else None
        rewards.append(
            rubric_ratio(
                completion_text(completions[i]),
                reference[i],
                character=characters[i],
                question=questions[i],
                scene=scene,
            )
        )
    return rewards


def answer_checks(response: str, reference: str, character: str | None = None) -> dict[str, bool]:
    """Which parts of one answer are exactly right: `colour`, `shape` and `count` (the reference's value and no
    other), `voice` (the character's catchphrase and voice words, nothing of another character's: [`voice_checks`]),
    `all` (all four). Word order and phrasing are free: any of the character's answer patterns is right. The character is
    inferred from the reference when not given."""
    scene = parse_scene(reference)
    if scene is None:
        raise ValueError(f"The reference {reference!r} names no scene of the shapes task.")
    name = character if character is not None else infer_character(reference)
    words = _words(response)
    right = {
        "colour": {w for w in words if w in COLOURS} == {scene.colour},
        "shape": {_SHAPE_WORDS[w] for w in words if w in _SHAPE_WORDS} == {scene.shape},
        "count": {w for w in words if w in COUNT_WORDS} == {COUNT_WORDS[scene.count - 1]},
        "voice": name is not None and voice_checks(response, name)["voice"],
    }
    right["all"] = all(right.values())
    return right


def answer_accuracy(responses, references, characters=None) -> dict[str, float]:
    """Exact-answer accuracies over a set of answers (for greedy evaluation): the mean of [`answer_checks`] over the
    answers (`colour`, `shape`, `count`, `voice`, `all`)."""
    if len(responses) != len(references):
        raise ValueError(f"Got {len(responses)} responses for {len(references)} references.")
    if not responses:
        raise ValueError("answer_accuracy needs at least one response.")
    characters = characters if characters is not None else [None] * len(responses)
    hits = {"colour": 0, "shape": 0, "count": 0, "voice": 0, "all": 0}
    for response, reference, name in zip(responses, references, characters):
        for key, ok in answer_checks(response, reference, name).items():
            hits[key] += ok
    return {key: value / len(responses) for key, value in hits.items()}


# The share of task success in `task_reward`; the rest is the judge-like rubric ratio.
TASK_SUCCESS_WEIGHT = 0.75


def task_reward(
    prompts, completions, reference=None, character=None, success_weight: float = TASK_SUCCESS_WEIGHT, **kwargs
) -> list[float]:
    """A reward whose spread follows task success: `success_weight` x the fraction of the answer's colour, shape,
    count and voice that are exactly right ([`answer_checks`]) + (1 - `success_weight`) x the rubric ratio
    ([`rubric_reward`], the paper's judge-like reward, which keeps fluency and format in the reward).

    The rubric ratio alone is dominated by easy dimensions (a wrong colour costs 0.075 of a 1.0 reward), so RL sees
    little signal from what it can fix; with `success_weight=0.75` a wrong colour or shape costs about 0.2. Same
    signature and dataset columns as [`rubric_reward`]."""
    if not 0.0 <= success_weight <= 1.0:
        raise ValueError(f"success_weight must be in [0, 1] (got {success_weight}).")
    ratios = rubric_reward(prompts, completions, reference=reference, character=character, **kwargs)
    characters = character if character is not None else [None] * len(completions)
    rewards = []
    for i, ratio in enumerate(ratios):
        checks = answer_checks(completion_text(completions[i]), reference[i], characters[i])
        success = sum(checks[k] for k in ("colour", "shape", "count", "voice")) / 4
        rewards.append(success_weight * success + (1 - success_weight) * ratio)
    return rewards


class RubricJudge:
    """The synthetic task's offline rubric with the judge's interface: each answer and the reference are scored on
    the rubric's dimensions, and the metric is the mean over dimensions of answer score / reference score."""

    def __repr__(self) -> str:
        return "RubricJudge(trl_latent.experiments.shapes.reward)"

    def judge(self, prompts, completions, reference=None, character=None, question=None, **kwargs):
        from ...rewards.judge import Judgement

        judgements = []
        for i, completion in enumerate(completions):
            scores = rubric_scores(
                completion_text(completion),
                reference[i],
                character=character[i] if character else None,
                question=question[i] if question else None,
            )
            pairs = {k: (scores["response"][k], scores["reference"][k]) for k in scores["response"]}
            judgements.append(Judgement(scores=pairs, num_dimensions=len(pairs)))
        return judgements

    def metrics(self) -> dict[str, float]:
        return {}


# The RL reward of the embedded job: "task" (task success + the rubric ratio, a spread that follows what RL can fix)
# or "rubric" (the judge-like ratio alone, the paper's reward).
REWARDS = {"task": task_reward, "rubric": rubric_reward}
