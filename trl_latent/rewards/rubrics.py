"""The judge's rubrics and prompts: the dimensions each benchmark is scored on and the messages the judge receives.

A [`Rubric`] names its [`Dimension`]s (a canonical key, the title shown to the judge, the question it asks and the
name variants the score parser also accepts), the dataset columns it reads, and how to build the judge's chat
messages from a sample. Two are defined, as the paper judges them:

- [`MMROLE_RUBRIC`] (8 dimensions): the conversation, the character's profile, answer A and reference B, judged by an
  objective role-play judge;
- [`PCOGALIGN_RUBRIC`] (5 dimensions): the user's role set and scene (`eval_info`), the question, answer A and
  reference B, judged from the user's point of view.

Every prompt asks for one `N. <Dimension>: <comment> [Scores]: (A, B)` line per dimension, with scores from 1 to 10
([`~trl_latent.rewards.parsing.parse_scores`] reads them). [`RUBRICS`] maps the names `"mmrole"` and `"pcogalign"`
to them; [`~trl_latent.rewards.judge.JudgeReward`] takes a name or any [`Rubric`].

```python
>>> from trl_latent.rewards.rubrics import RUBRICS
>>> [d.key for d in RUBRICS["pcogalign"].dimensions][:2]
['role_set_sensitivity', 'body_behavior_awareness']
```
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MMROLE_DIMENSIONS",
    "MMROLE_JUDGE_SYSTEM",
    "MMROLE_RUBRIC",
    "PCOGALIGN_DIMENSIONS",
    "PCOGALIGN_RUBRIC",
    "RUBRICS",
    "Dimension",
    "Rubric",
    "conversation_text",
]


@dataclass(frozen=True)
class Dimension:
    """One rubric dimension: a canonical `key`, the `title` shown to the judge, what it asks, and name variants the
    parser also accepts."""

    key: str
    title: str
    question: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rubric:
    """A benchmark's judging rubric: its dimensions and how to build the judge's messages from a dataset row.

    `build(conversation, answer, row)` returns the chat messages for the judge; `row` holds the dataset columns of
    the sample (the extra keyword arguments TRL passes to reward functions). `required_columns` are checked up
    front so a dataset without them fails with a clear error before any request is sent. `example` is a small valid
    sample for the start-up test judgement ([`~trl_latent.rewards.judge.JudgeReward.check_judgement`]): its
    `required_columns`, plus `prompt` (the conversation) and `answer` (the answer judged); without one, each is a
    short placeholder text.
    """

    name: str
    dimensions: tuple[Dimension, ...]
    required_columns: tuple[str, ...]
    build: Callable[[str, str, dict], list[dict]]
    example: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(d.key for d in self.dimensions)


def _format_block(dimensions: Sequence[Dimension], a: str = "Response A", b: str = "Response B") -> str:
    asks = "\n".join(f"{i}. {d.title}: {d.question}" for i, d in enumerate(dimensions, 1))
    lines = "\n".join(
        f"{i}. {d.title}: <brief comparison> [Scores]: (<score of {a}>, <score of {b}>)"
        for i, d in enumerate(dimensions, 1)
    )
    return (
        f"Rate both responses on each aspect:\n{asks}\n\n"
        f"For each aspect, first compare the two responses briefly, then give a pair of scores from 1 (poor) to 10 "
        f"(excellent), the first for {a} and the second for {b}.\n\n"
        f"Write exactly one line per aspect, in this format and order:\n{lines}\n\n"
        f"Judge without bias: neither the order in which the responses appear nor their length should sway you. "
        f"Give exactly {len(dimensions)} score pairs."
    )


MMROLE_DIMENSIONS = (
    Dimension(
        "instruction_adherence",
        "Instruction Adherence",
        "Does the response play {name} directly, containing only what {name} would say, with no explanatory preamble "
        "or afterword?",
    ),
    Dimension("fluency", "Fluency", "Is the response grammatical and does it read smoothly?"),
    Dimension(
        "coherency",
        "Coherency",
        "Does the response follow the conversation without contradicting it or facts established earlier?",
        aliases=("coherence",),
    ),
    Dimension(
        "image_text_relevance",
        "Image-Text Relevance",
        "Is the response closely tied to what the image shows?",
        aliases=("image relevance", "image text relevancy"),
    ),
    Dimension(
        "response_accuracy",
        "Response Accuracy",
        "Does the response answer the human's words correctly, or open the conversation well given the image?",
    ),
    Dimension(
        "personality_consistency",
        "Personality Consistency",
        "Does the response show {name}'s personality accurately and fully?",
    ),
    Dimension(
        "knowledge_consistency",
        "Knowledge Consistency",
        "Is the response consistent with what {name} knows: experiences, abilities and relationships?",
    ),
    Dimension(
        "tone_consistency",
        "Tone Consistency",
        "Does the response keep {name}'s usual manner of speaking and catchphrases, rather than an AI assistant's "
        "style?",
    ),
)

MMROLE_JUDGE_SYSTEM = (
    "You are an objective and exacting judge of role-playing quality and multimodal understanding. You compare two "
    "responses and score them precisely in the requested format."
)


def _profile_text(profile: Any) -> str:
    if isinstance(profile, dict):
        return "\n".join(f"- {key.capitalize()}: {value}" for key, value in profile.items())
    return str(profile)


def _build_mmrole(conversation: str, answer: str, row: dict) -> list[dict]:
    name = row["character"]
    dims = [Dimension(d.key, d.title, d.question.format(name=name)) for d in MMROLE_DIMENSIONS]
    user = (
        f"## Conversation\n{conversation}\n\n"
        f"## Response A\n{answer}\n\n"
        f"## Response B\n{row['reference']}\n\n"
        f"## Task\nBoth responses were written for the same instruction: role-play as {name} and talk with a curious "
        f"human about the given image, using {name}'s own tone, manner and vocabulary.\n\n"
        f"What is known about {name}:\n{_profile_text(row['profile'])}\n\n" + _format_block(dims)
    )
    return [{"role": "system", "content": MMROLE_JUDGE_SYSTEM}, {"role": "user", "content": user}]


MMROLE_RUBRIC = Rubric(
    name="mmrole",
    dimensions=MMROLE_DIMENSIONS,
    required_columns=("reference", "character", "profile"),
    build=_build_mmrole,
    example={
        "prompt": "What do you see in this picture?",
        "answer": "Ahoy, matey! A red circle on a white sail, round as the full moon over the harbour!",
        "reference": "Ahoy! A red circle sits alone on the white deck, like a lifebuoy in calm water.",
        "character": "Captain Rolo",
        "profile": {"introduction": "A cheerful old sea captain.", "catchphrase": "Ahoy!"},
    },
)

PCOGALIGN_DIMENSIONS = (
    Dimension(
        "role_set_sensitivity",
        "Role-Set Sensitivity",
        "Does the response take all of my roles into account, in this situation?",
    ),
    Dimension(
        "body_behavior_awareness",
        "Body Behavior Awareness",
        "Does the response help me act well physically: concrete, safe, practical steps?",
        aliases=("body behaviour awareness",),
    ),
    Dimension(
        "mind_feelings_awareness",
        "Mind Feelings Awareness",
        "Does the response care for how I feel and help me feel better?",
        aliases=("mind feeling awareness",),
    ),
    Dimension(
        "contextual_awareness",
        "Contextual Awareness",
        "Does the response fit the scene in the image and the place I am in?",
    ),
    Dimension(
        "conversational_flow",
        "Conversational Flow",
        "Does the response read like a natural, well-paced spoken reply?",
    ),
)


def _build_pcogalign(conversation: str, answer: str, row: dict) -> list[dict]:
    info = row["eval_info"]
    role_set = row["role_set"]
    system = (
        f'You judge an assistant\'s answers from the point of view of its user, who is "{role_set}". Answer as that '
        f"user would, following the instructions and the required format exactly."
    )
    user = (
        f'## Who I am\nI am "{role_set}".\n\n'
        f'## The situation\nThe scene: "{info["ImageDesc"]}", at the {info["location"]}.\n'
        f"What I want from the assistant here: {info['EvalHelp']}\n\n"
        f"## My question\n{conversation}\n\n"
        f"## Response A\n{answer}\n\n"
        f"## Response B\n{row['reference']}\n\n"
        "Do not prefer a response because it is longer; prefer the one that best considers my physical and mental "
        "state and helps me behave well and feel better.\n\n" + _format_block(PCOGALIGN_DIMENSIONS)
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


PCOGALIGN_RUBRIC = Rubric(
    name="pcogalign",
    dimensions=PCOGALIGN_DIMENSIONS,
    required_columns=("reference", "role_set", "eval_info"),
    build=_build_pcogalign,
    example={
        "prompt": "My son will not stop crying. What should I do?",
        "answer": "Kneel down to his height, speak softly and give him a hug; then ask him what happened.",
        "reference": "Take a slow breath, sit down with him and ask what upset him.",
        "role_set": "a Father at Home; a Fireman at Community",
        "eval_info": {"ImageDesc": "a child crying on a sofa", "location": "Home", "EvalHelp": "be calm and gentle"},
    },
)

RUBRICS = {"mmrole": MMROLE_RUBRIC, "pcogalign": PCOGALIGN_RUBRIC}


def conversation_text(prompt: Any) -> str:
    """The text of a prompt conversation for the judge (`role: text` per message; images are left out)."""
    if isinstance(prompt, str):
        return prompt
    lines = []
    for message in prompt:
        content = message.get("content")
        if isinstance(content, str):
            text = content
        else:
            text = "".join(part.get("text") or "" for part in content or [] if part.get("type") == "text")
        lines.append(f"{message.get('role', 'user')}: {text}")
    return "\n".join(lines)
