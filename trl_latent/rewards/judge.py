"""The paper's reward: an LLM judge compares the policy's answer (A) with the reference answer (B).

For every completion the judge gets the conversation, the character profile (MMRole) or the user's role set and scene
(PCogAlignBench), answer A and reference B, and gives a pair of 1-10 scores on each dimension of the benchmark's
rubric. The reward is `sum(A scores) / sum(B scores)` (paper); the evaluation metric is the mean over dimensions of
`A_d / B_d` ([`Judgement.metric`]).

[`JudgeReward`] is a TRL reward function (`reward(prompts, completions, **kwargs) -> list[float]`, with a
`__name__`) that works with any [`JudgeBackend`]: [`OpenAIJudgeBackend`] for an OpenAI-compatible chat endpoint
(a local vLLM server, say), [`TransformersJudgeBackend`] for a local transformers model, or any callable
`messages -> text`. Requests run concurrently (at most `max_concurrency` in flight), each with the backend's timeout
and up to `max_retries` retries with exponential backoff. A judgement that fails (request error, timeout, or no
score pair parsed) gets the mean reward of the batch's successful judgements; when all fail, every completion gets
`fallback_reward` (1.0, a tie with the reference: a constant within a group gives zero advantage). A record the
rubric cannot build a prompt for (e.g. a PCogAlign record without `eval_info.EvalHelp`) is not sent; it fails the same
way, with a warning naming the record. Failures never raise; they are counted (`metrics()`, and per batch through TRL's
`log_metric` when the trainer passes it). Error texts are logged and stored with known secrets masked
([`mask_secrets`]).

Parsing is tolerant: the judge is asked for `N. <Dimension>: <comment> [Scores]: (A, B)` lines, and the parser also
reads `A=7, B=8`, `A: 7, B: 8`, bare `(7, 8)` pairs after a dimension name, and JSON objects mapping dimension names
to `[A, B]` or `{"A": ..., "B": ...}`. A pair outside the 1-10 scale the judge is asked for (0, 11, -3, NaN) is
rejected and counted (`judge/out_of_scale`); its dimension does not parse. When only some dimensions parse, the reward uses those (sums over the parsed
dimensions only) and the judgement counts as partial; when none parse it is a parse error.

```python
>>> from trl_latent.rewards.judge import MMROLE_RUBRIC, parse_scores
>>> parse_scores("1. Fluency: clear. [Scores]: (7, 8)", MMROLE_RUBRIC.dimensions)
{'fluency': (7.0, 8.0)}
```
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..metrics.diversity import completion_text

# Backends, their errors and secret masking live in their own modules; re-exported here (the public API).
from .judge_backends import (
    CallableJudgeBackend,
    JudgeBackend,
    JudgeConnectionError,
    JudgeRequestError,
    JudgeTimeoutError,
    OpenAIJudgeBackend,
    TransformersJudgeBackend,
)
from .secrets import known_secrets, looks_like_secret, mask_secrets

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------- rubrics
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
    front so a dataset without them fails with a clear error before any request is sent.
    """

    name: str
    dimensions: tuple[Dimension, ...]
    required_columns: tuple[str, ...]
    build: Callable[[str, str, dict], list[dict]]

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
)

RUBRICS = {"mmrole": MMROLE_RUBRIC, "pcogalign": PCOGALIGN_RUBRIC}


# ------------------------------------------------------------------------------------------------------- parsing
# Signs, NaN and infinities are read (and then rejected as outside the scale) rather than half-read: "-3" is not 3.
_NUM = r"([-+]?(?:\d+(?:\.\d+)?|nan\b|inf(?:inity)?\b))"
_PAIR_PATTERNS = (
    # [Scores]: (7, 8)   Scores: 7, 8   score: (7,8)
    re.compile(r"\[?\s*scores?\s*\]?\s*[:=]?\s*\(?\s*" + _NUM + r"\s*[,;/]\s*" + _NUM + r"\s*\)?", re.I),
    # A=7, B=8   A: 7 / B: 8   Response A: 7, Response B: 8   Model A = 7 ... Model B = 8
    re.compile(r"\bA\s*[=:]\s*" + _NUM + r"\s*(?:/\s*10)?[\s,;/]+(?:\w+\s+)?B\s*[=:]\s*" + _NUM, re.I),
    # (7, 8)
    re.compile(r"\(\s*" + _NUM + r"\s*,\s*" + _NUM + r"\s*\)", re.I),
)
_TAGGED = re.compile(r"\[\s*scores?\s*\]\s*:?\s*\(\s*" + _NUM + r"\s*,\s*" + _NUM + r"\s*\)", re.I)
MIN_SCORE, MAX_SCORE = 1.0, 10.0  # the scale the judge is asked for ("from 1 (poor) to 10")


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def _name_pattern(name: str) -> re.Pattern:
    words = _norm(name).split()
    return re.compile(r"\b" + r"[\s_\-]*".join(map(re.escape, words)) + r"\b", re.I)


def _valid(a: float, b: float) -> bool:
    # NaN compares false, so it is rejected too.
    return MIN_SCORE <= a <= MAX_SCORE and MIN_SCORE <= b <= MAX_SCORE


class _Rejected:
    """Counts score pairs a parse saw but rejected (outside the asked scale, NaN, infinite)."""

    def __init__(self):
        self.count = 0

    def keep(self, a: float, b: float) -> bool:
        if _valid(a, b):
            return True
        self.count += 1
        return False


def _parse_json(text: str, dimensions: Sequence[Dimension], rejected: _Rejected) -> dict[str, tuple[float, float]]:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return {}
    try:
        data = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return {}
    if isinstance(data, dict) and isinstance(data.get("scores"), dict):
        data = data["scores"]
    if not isinstance(data, dict):
        return {}
    names = {}
    for d in dimensions:
        for variant in (d.key, d.title, *d.aliases):
            names[_norm(variant)] = d.key
    out = {}
    for raw_key, value in data.items():
        key = names.get(_norm(str(raw_key)))
        if key is None:
            continue
        pair = None
        if isinstance(value, (list, tuple)) and len(value) == 2:
            pair = value
        elif isinstance(value, dict):
            by = {_norm(str(k)).split()[-1] if _norm(str(k)) else "": v for k, v in value.items()}
            if "a" in by and "b" in by:
                pair = (by["a"], by["b"])
        try:
            a, b = float(pair[0]), float(pair[1])  # type: ignore[index]
        except (TypeError, ValueError):
            continue
        if rejected.keep(a, b):
            out[key] = (a, b)
    return out


def parse_scores(text: str, dimensions: Sequence[Dimension]) -> dict[str, tuple[float, float]]:
    """Score pairs `{dimension key: (A, B)}` found in a judge's answer; dimensions that do not parse are absent.

    Tried in order: a JSON object; then, for each dimension named in the text (preferring a mention at the start
    of a line), the first score pair in the text between that mention and the next dimension's; then, if no
    dimension is named at all, `[Scores]: (a, b)` pairs taken in rubric order. A pair outside the scale the judge is
    asked for (1-10), negative, NaN or infinite is rejected: its dimension counts as not parsed.
    """
    return _parse_scores(text, dimensions, _Rejected())


def _parse_scores(text: str, dimensions: Sequence[Dimension], rejected: _Rejected) -> dict[str, tuple[float, float]]:
    found = _parse_json(text, dimensions, rejected)
    if found:
        return found
    mentions = []
    for d in dimensions:
        best = None
        for variant in (d.title, *d.aliases):
            for match in _name_pattern(variant).finditer(text):
                line_start = text.rfind("\n", 0, match.start()) + 1
                prefix = text[line_start : match.start()]
                at_line_start = re.fullmatch(r"[\s#*>\-\d.)(\[]*", prefix) is not None
                rank = (0 if at_line_start else 1, match.start())
                if best is None or rank < best[0]:
                    best = (rank, match.start(), match.end())
        if best is not None:
            mentions.append((best[1], best[2], d.key))
    out: dict[str, tuple[float, float]] = {}
    if mentions:
        mentions.sort()
        for index, (_, end, key) in enumerate(mentions):
            stop = mentions[index + 1][0] if index + 1 < len(mentions) else len(text)
            segment = text[end:stop]
            for pattern in _PAIR_PATTERNS:
                match = pattern.search(segment)
                if match:
                    a, b = float(match.group(1)), float(match.group(2))
                    if rejected.keep(a, b):
                        out[key] = (a, b)
                    break
        return out
    pairs = [(float(a), float(b)) for a, b in _TAGGED.findall(text)]
    if len(pairs) <= len(dimensions):
        out = {d.key: pair for d, pair in zip(dimensions, pairs) if rejected.keep(*pair)}
    return out


@dataclass
class Judgement:
    """One judged completion. `scores` maps dimension keys to (A, B); `error` says why it failed, if it did."""

    scores: dict[str, tuple[float, float]] = field(default_factory=dict)
    text: str = ""
    error: str | None = None
    num_dimensions: int = 0
    failure: str | None = None  # "request" (no answer), "parse" (no usable score pair) or "record" (no prompt)
    out_of_scale: int = 0  # score pairs rejected as outside the asked scale (or NaN)

    @property
    def ok(self) -> bool:
        return self.error is None and self.reward is not None

    @property
    def partial(self) -> bool:
        return bool(self.scores) and len(self.scores) < self.num_dimensions

    @property
    def reward(self) -> float | None:
        """Sum of A scores / sum of B scores over the parsed dimensions (paper); `None` if it cannot be formed."""
        b = sum(pair[1] for pair in self.scores.values())
        if not self.scores or b <= 0:
            return None
        return sum(pair[0] for pair in self.scores.values()) / b

    @property
    def metric(self) -> float | None:
        """Mean over the parsed dimensions of A_d / B_d (the paper's evaluation metric); dimensions with B_d = 0
        are left out."""
        ratios = [a / b for a, b in self.scores.values() if b > 0]
        return sum(ratios) / len(ratios) if ratios else None


__all__ = [
    "MMROLE_RUBRIC",
    "PCOGALIGN_RUBRIC",
    "RUBRICS",
    "CallableJudgeBackend",
    "Dimension",
    "JudgeBackend",
    "JudgeConnectionError",
    "JudgeRequestError",
    "JudgeReward",
    "JudgeTimeoutError",
    "Judgement",
    "OpenAIJudgeBackend",
    "Rubric",
    "TransformersJudgeBackend",
    "judgement_summary",
    "known_secrets",
    "looks_like_secret",
    "mask_secrets",
    "parse_scores",
]


# ------------------------------------------------------------------------------------------------------- reward
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


COUNTERS = (
    "requests",
    "judgements",
    "failures",
    "timeouts",
    "request_errors",
    "parse_errors",
    "partial",
    "retries",
    "out_of_scale",
    "bad_records",
)


class JudgeReward:
    """A TRL reward function scoring completions with an LLM judge against the reference answer.

    Args:
        rubric (`str` or [`Rubric`], *optional*, defaults to `"mmrole"`):
            `"mmrole"` (8 dimensions), `"pcogalign"` (5 dimensions) or a custom [`Rubric`].
        backend ([`JudgeBackend`] or callable):
            The judge: [`OpenAIJudgeBackend`], [`TransformersJudgeBackend`], or any callable `messages -> text`.
        max_concurrency (`int`, *optional*, defaults to `8`):
            Most judge requests in flight at once.
        max_retries (`int`, *optional*, defaults to `2`):
            Retries after a timeout or a retryable request error.
        backoff (`float`, *optional*, defaults to `1.0`):
            Seconds before the first retry; doubled on each further retry (capped at 30 s).
        fallback_reward (`float`, *optional*, defaults to `1.0`):
            Reward of every completion in a batch where no judgement succeeded (1.0 = a tie with the reference).
        check_connection (`bool`, *optional*, defaults to `True`):
            Call the backend's `check_connection()` now, so an unreachable judge fails at start-up.
        name (`str`, *optional*, defaults to `"judge_reward"`):
            The reward function's `__name__` (TRL logs `rewards/<name>/mean`).

    Example:

    ```python
    >>> from trl_latent.rewards.judge import JudgeReward, OpenAIJudgeBackend
    >>> backend = OpenAIJudgeBackend("http://localhost:8000/v1", "Qwen/Qwen3-32B", api_key_env="JUDGE_API_KEY")
    >>> reward = JudgeReward("mmrole", backend)  # doctest: +SKIP
    >>> # GRPOTrainer(..., reward_funcs=[reward])  # needs the `reference`, `character`, `profile` columns
    ```
    """

    def __init__(
        self,
        rubric: str | Rubric = "mmrole",
        backend: JudgeBackend | Callable[[list[dict]], str] | None = None,
        *,
        max_concurrency: int = 8,
        max_retries: int = 2,
        backoff: float = 1.0,
        fallback_reward: float = 1.0,
        check_connection: bool = True,
        name: str = "judge_reward",
    ):
        if isinstance(rubric, str):
            if rubric not in RUBRICS:
                raise ValueError(f"Unknown rubric {rubric!r}; choose from {sorted(RUBRICS)} or pass a Rubric.")
            rubric = RUBRICS[rubric]
        if backend is None:
            raise ValueError(
                "JudgeReward needs a judge backend: OpenAIJudgeBackend(base_url, model), "
                "TransformersJudgeBackend(model, tokenizer) or a callable messages -> text."
            )
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}.")
        if max_retries < 0 or backoff < 0:
            raise ValueError("max_retries and backoff must be >= 0.")
        self.rubric = rubric
        self.backend = backend if isinstance(backend, JudgeBackend) else CallableJudgeBackend(backend)
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff = backoff
        self.fallback_reward = fallback_reward
        self.__name__ = name
        self._lock = threading.Lock()
        self.counters = dict.fromkeys(COUNTERS, 0)
        if check_connection:
            self.backend.check_connection()

    def __repr__(self) -> str:
        return (
            f"JudgeReward(rubric={self.rubric.name!r}, backend={self.backend!r}, "
            f"max_concurrency={self.max_concurrency}, max_retries={self.max_retries})"
        )

    # -- counters
    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def metrics(self) -> dict[str, float]:
        """Cumulative counters under `judge/...` keys, for logging."""
        with self._lock:
            return {f"judge/{key}": float(value) for key, value in self.counters.items()}

    def reset_metrics(self) -> None:
        with self._lock:
            self.counters = dict.fromkeys(COUNTERS, 0)

    # -- judging
    def _request(self, messages: list[dict]) -> str:
        attempt = 0
        while True:
            self._count("requests")
            try:
                return self.backend(messages)
            except JudgeTimeoutError:
                self._count("timeouts")
                retryable = True
                reason = "timeout"
            except JudgeRequestError as err:
                self._count("request_errors")
                retryable = err.retryable
                reason = str(err)
            except Exception as err:  # a custom backend's failure must not stop training
                self._count("request_errors")
                retryable = True
                reason = f"{type(err).__name__}: {err}"
            reason = mask_secrets(reason, self.backend.secrets())  # exception texts may quote the key
            if not retryable or attempt >= self.max_retries:
                raise JudgeRequestError(f"judge request failed after {attempt + 1} attempt(s): {reason}")
            delay = min(self.backoff * 2**attempt, 30.0)
            attempt += 1
            self._count("retries")
            logger.debug("Judge request failed (%s); retry %d in %.2f s.", reason, attempt, delay)
            time.sleep(delay)

    def _judge_one(self, messages: list[dict]) -> Judgement:
        n = len(self.rubric.dimensions)
        try:
            text = self._request(messages)
        except Exception as err:
            return Judgement(error=str(err), num_dimensions=n, failure="request")
        rejected = _Rejected()
        scores = _parse_scores(text, self.rubric.dimensions, rejected)
        judgement = Judgement(scores=scores, text=text, num_dimensions=n, out_of_scale=rejected.count)
        if judgement.reward is None:
            judgement.error = "no usable score pair could be parsed from the judge's answer" + (
                f" ({rejected.count} pair(s) outside the {MIN_SCORE:g}-{MAX_SCORE:g} scale or not a number)"
                if rejected.count
                else ""
            )
            judgement.failure = "parse"
        return judgement

    def _build_messages(self, index: int, prompt, completion, row: dict) -> list[dict] | Judgement:
        """The judge's messages for one completion, or a failed [`Judgement`] naming the record when the rubric cannot
        build them (e.g. a PCogAlign record whose `eval_info` has no `EvalHelp`)."""
        conversation = row.get("question") or row.get("query") or conversation_text(prompt)
        if row.get("history"):
            conversation = f"{row['history']}\n[{row.get('question_speaker') or 'human'}]: {conversation}"
        try:
            return self.rubric.build(conversation, completion_text(completion), row)
        except (KeyError, TypeError, AttributeError, IndexError) as err:
            record = f"record id={row['id']!r}" if row.get("id") is not None else f"the record of completion {index}"
            detail = f"missing field {err}" if isinstance(err, KeyError) else f"{type(err).__name__}: {err}"
            return Judgement(
                error=f"the {self.rubric.name} judge prompt cannot be built for {record} ({detail}); fix the dataset "
                "(the loaders in trl_latent.data build every column the rubric reads)",
                num_dimensions=len(self.rubric.dimensions),
                failure="record",
            )

    def _rows(self, n: int, kwargs: dict) -> list[dict]:
        missing = [c for c in self.rubric.required_columns if c not in kwargs]
        if missing:
            raise ValueError(
                f"The {self.rubric.name} judge needs the dataset column(s) {missing} (passed to reward functions as "
                f"keyword arguments); load the data with trl_latent.data ({self.rubric.name}) loaders or add them."
            )
        for column in self.rubric.required_columns:
            if len(kwargs[column]) != n:
                raise ValueError(f"Column {column!r} has {len(kwargs[column])} values for {n} completions.")
        columns = {k: v for k, v in kwargs.items() if isinstance(v, (list, tuple)) and len(v) == n}
        return [{k: v[i] for k, v in columns.items()} for i in range(n)]

    def judge(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[Judgement]:
        """Judge every completion (concurrently); never raises for judge failures, which come back as
        [`Judgement`]s with an `error`."""
        if len(prompts) != len(completions):
            raise ValueError(f"Got {len(prompts)} prompts for {len(completions)} completions.")
        rows = self._rows(len(completions), kwargs)
        built = [self._build_messages(i, *item) for i, item in enumerate(zip(prompts, completions, rows))]
        if not built:
            return []
        judgements: list = list(built)
        to_send = [i for i, b in enumerate(built) if not isinstance(b, Judgement)]
        if to_send:
            with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(to_send))) as pool:
                for i, judgement in zip(to_send, pool.map(self._judge_one, [built[i] for i in to_send])):
                    judgements[i] = judgement
        failed = [j for j in judgements if not j.ok]
        self._count("judgements", len(judgements))
        self._count("failures", len(failed))
        self._count("parse_errors", sum(j.failure == "parse" for j in failed))
        self._count("bad_records", sum(j.failure == "record" for j in failed))
        self._count("out_of_scale", sum(j.out_of_scale for j in judgements))
        self._count("partial", sum(j.ok and j.partial for j in judgements))
        if failed:
            reasons = sorted({j.error or "unknown" for j in failed})
            logger.warning(
                "%d of %d judgement(s) failed (%s); a failed judgement gets the batch mean.",
                len(failed),
                len(judgements),
                "; ".join(reasons),
            )
        return judgements

    def __call__(self, prompts: Sequence, completions: Sequence, **kwargs) -> list[float]:
        before = self.metrics()
        judgements = self.judge(prompts, completions, **kwargs)
        rewards = [j.reward if j.ok else None for j in judgements]
        succeeded = [r for r in rewards if r is not None]
        fill = sum(succeeded) / len(succeeded) if succeeded else self.fallback_reward
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            after = self.metrics()
            for key in COUNTERS:  # this batch's counts
                log_metric(f"judge/{key}", after[f"judge/{key}"] - before[f"judge/{key}"])
            log_metric("judge/failure_rate", (len(rewards) - len(succeeded)) / max(len(rewards), 1))
        return [r if r is not None else fill for r in rewards]


def judgement_summary(judgements: Sequence[Judgement]) -> dict[str, float]:
    """Mean metric and reward over successful judgements, and the number that failed."""
    metrics = [j.metric for j in judgements if j.ok and j.metric is not None]
    rewards = [j.reward for j in judgements if j.ok]
    return {
        "metric": sum(metrics) / len(metrics) if metrics else math.nan,
        "reward": sum(rewards) / len(rewards) if rewards else math.nan,
        "failures": float(sum(not j.ok for j in judgements)),
    }
