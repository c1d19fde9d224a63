"""The paper's reward: an LLM judge compares the policy's answer (A) with the reference answer (B).

For every completion the judge gets the conversation, the character profile (MMRole) or the user's role set and scene
(PCogAlignBench), answer A and reference B, and gives a pair of 1-10 scores on each dimension of the benchmark's
rubric ([`~trl_latent.rewards.rubrics`]). The reward is `sum(A scores) / sum(B scores)` (paper); the evaluation metric
is the mean over dimensions of `A_d / B_d` ([`Judgement.metric`]).

[`JudgeReward`] is a TRL reward function (`reward(prompts, completions, **kwargs) -> list[float]`, with a
`__name__`) that works with any [`JudgeBackend`]: [`OpenAIJudgeBackend`] for an OpenAI-compatible chat endpoint
(a local vLLM server, say), [`TransformersJudgeBackend`] for a local transformers model, or any callable
`messages -> text`. Requests run concurrently (at most `max_concurrency` in flight), each with the backend's timeout
and up to `max_retries` retries with exponential backoff. A judgement that fails (request error, timeout, or no
score pair parsed) gets the mean reward of the batch's successful judgements; when all fail, every completion gets
`fallback_reward` (1.0, a tie with the reference: a constant within a group gives zero advantage). A record the
rubric cannot build a prompt for (e.g. a PCogAlign record without `eval_info.EvalHelp`) is not sent; it fails the same
way, with a warning naming the record. Failures never raise; they are counted (`metrics()`, and per batch through TRL's
`log_metric` when the trainer passes it), and the last batch's outcome (`last_batch`, a [`BatchOutcome`]: failures by
reason) is kept for the trainer: `LatentGRPOTrainer` and `TokenGRPOTrainer` save a checkpoint and stop when every
judgement of `max_failed_reward_batches` consecutive batches failed
([`~trl_latent.training.reward_failures.RewardFailureError`]). Error texts are logged and stored with known secrets
masked ([`mask_secrets`]).

At start-up (`check_connection=True`) the judge must be reachable, and a remote judge ([`OpenAIJudgeBackend`]) must
also answer one real, small judgement built with the rubric ([`JudgeReward.check_judgement`]), through the same
request path as training: a refused request (HTTP 401, 403, 404, ...) or an answer without a readable score pair
raises [`JudgeCheckError`], naming what the judge answered and what to do. Timeouts and server errors (5xx) are
retried; if they persist the run starts with a warning.

The judge's answer is read tolerantly ([`~trl_latent.rewards.parsing.parse_scores`]); a score pair outside the 1-10
scale is rejected and counted (`judge/out_of_scale`). When only some dimensions parse, the reward uses those (sums
over the parsed dimensions only) and the judgement counts as partial; when none parse it is a parse error.

The rubrics, the parser, the backends and secret masking live in their own modules (`rubrics`, `parsing`,
`judge_backends`, `secrets`); their public names are re-exported here, so `from trl_latent.rewards.judge import
MMROLE_RUBRIC, parse_scores, OpenAIJudgeBackend` keeps working.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..metrics.diversity import completion_text

# Backends, their errors, secret masking, rubrics and score parsing live in their own modules; re-exported here (the
# public API).
from .judge_backends import (
    CallableJudgeBackend,
    JudgeBackend,
    JudgeCheckError,
    JudgeConnectionError,
    JudgeRequestError,
    JudgeTimeoutError,
    OpenAIJudgeBackend,
    TransformersJudgeBackend,
)
from .parsing import MAX_SCORE, MIN_SCORE, _parse_scores, _Rejected, parse_scores
from .rubrics import (
    MMROLE_DIMENSIONS,
    MMROLE_JUDGE_SYSTEM,
    MMROLE_RUBRIC,
    PCOGALIGN_DIMENSIONS,
    PCOGALIGN_RUBRIC,
    RUBRICS,
    Dimension,
    Rubric,
    conversation_text,
)
from .secret_masking import known_secrets, looks_like_secret, mask_secrets

__all__ = [
    "MMROLE_DIMENSIONS",
    "MMROLE_JUDGE_SYSTEM",
    "MMROLE_RUBRIC",
    "PCOGALIGN_DIMENSIONS",
    "PCOGALIGN_RUBRIC",
    "RUBRICS",
    "BatchOutcome",
    "CallableJudgeBackend",
    "Dimension",
    "JudgeBackend",
    "JudgeCheckError",
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

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------- result
@dataclass
class Judgement:
    """One judged completion. `scores` maps dimension keys to (A, B); `error` says why it failed, if it did."""

    scores: dict[str, tuple[float, float]] = field(default_factory=dict)
    text: str = ""
    error: str | None = None
    num_dimensions: int = 0
    failure: str | None = None  # "request" (no answer), "parse" (no usable score pair) or "record" (no prompt)
    out_of_scale: int = 0  # score pairs rejected as outside the asked scale (or NaN)
    reason: str | None = None  # a short name of the failure, by which failures are counted ("HTTP 401 Unauthorized")

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


@dataclass
class BatchOutcome:
    """How one batch of judgements went: how many failed, by reason (`{"HTTP 401 Unauthorized": 96}`), with the
    (masked) error text of the first failure of each reason. A trainer reads it from `JudgeReward.last_batch`."""

    judgements: int
    failures: int
    reasons: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)

    @property
    def all_failed(self) -> bool:
        return self.judgements > 0 and self.failures == self.judgements


PARSE_FAILURE = "no score pair in the answer"
SCALE_FAILURE = "scores outside the 1-10 scale"
RECORD_FAILURE = "judge prompt cannot be built"


# ------------------------------------------------------------------------------------------------------- reward
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
            Call the backend's `check_connection()` now, so an unreachable judge fails at start-up; for a remote
            backend ([`OpenAIJudgeBackend`]) also send one test judgement ([`check_judgement`]), so a judge that
            refuses requests (bad key, unknown model) or answers in a format the parser cannot read fails here too.
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
        self.last_batch: BatchOutcome | None = None
        if check_connection:
            self.backend.check_connection()
            if self.backend.test_judgement_at_start_up:
                self.check_judgement()

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

    # -- start-up check
    def check_judgement(self) -> Judgement | None:
        """Send one small, valid judgement built with the rubric (its `example`) through the same request path as
        training, and check that the answer parses.

        Raises [`JudgeCheckError`] (naming the status, the server's error text with secrets masked, and what to do)
        when the judge refuses the request (HTTP 401, 403, 404 or another error a retry will not fix) or answers
        without a readable score pair. Timeouts, server errors (5xx) and dropped connections are retried
        (`max_retries`); if they persist, a warning is logged and `None` returned: the run starts, and stops if every
        judgement of several batches fails. The check's requests are not counted in `metrics()`.
        """
        example = dict(self.rubric.example or {})
        prompt = example.pop("prompt", "Hello! What do you see?")
        answer = example.pop("answer", "Hello! I see a picture.")
        row = {column: "an example" for column in self.rubric.required_columns} | example
        try:
            messages = self.rubric.build(str(prompt), str(answer), row)
        except (KeyError, TypeError, AttributeError, IndexError) as err:
            logger.warning(
                "The start-up test judgement was not sent: the %s rubric cannot build a prompt from placeholder "
                "columns (%s: %s); give the Rubric an `example` row to enable it.",
                self.rubric.name,
                type(err).__name__,
                err,
            )
            return None
        skip = "Pass check_connection=False to JudgeReward to skip this start-up check."
        with self._lock:
            saved = dict(self.counters)
        try:
            text = self._request(messages)
        except JudgeRequestError as err:
            if err.retryable:
                logger.warning(
                    "The judge (%r) did not answer the start-up test judgement (%s); training starts anyway. If every "
                    "judgement of several batches fails, the run saves a checkpoint and stops.",
                    self.backend,
                    err,
                )
                return None
            advice = mask_secrets(self.backend.advice(err), self.backend.secrets())
            raise JudgeCheckError(
                f"The judge refused the start-up test judgement: {str(err).rstrip('.')}. {advice} Every judgement of "
                f"the run would fail the same way. {skip}",
                status=err.status,
            ) from None
        finally:
            with self._lock:
                self.counters = saved
        rejected = _Rejected()
        scores = _parse_scores(text, self.rubric.dimensions, rejected)
        judgement = Judgement(scores=scores, text=text, num_dimensions=len(self.rubric.dimensions))
        if judgement.reward is None:
            shown = " ".join(mask_secrets(text, self.backend.secrets()).split())
            shown = shown if len(shown) <= 300 else shown[:297] + "..."
            scale = (
                f" ({rejected.count} score pair(s) outside the {MIN_SCORE:g}-{MAX_SCORE:g} scale)"
                if rejected.count
                else ""
            )
            raise JudgeCheckError(
                f"The judge ({self.backend!r}) answered the start-up test judgement, but no score pair could be read "
                f"from its answer{scale}: {shown!r}. The {self.rubric.name} rubric asks for one `N. <Dimension>: <comment> "
                "[Scores]: (A, B)` line per dimension, scores 1-10 (docs/tasks_and_rewards.md); use an "
                "instruction-following chat model as the judge, check that the answer is not cut short (max_tokens), "
                f"or give a custom Rubric. Every judgement of the run would fail the same way. {skip}"
            )
        if judgement.partial:
            logger.warning(
                "The judge's answer to the start-up test judgement gave scores for %d of %d %s dimensions; the reward "
                "uses the parsed ones. Check the judge follows the rubric's format.",
                len(scores),
                len(self.rubric.dimensions),
                self.rubric.name,
            )
        return judgement

    # -- judging
    def _request(self, messages: list[dict]) -> str:
        attempt = 0
        while True:
            self._count("requests")
            status = None
            try:
                return self.backend(messages)
            except JudgeTimeoutError:
                self._count("timeouts")
                retryable = True
                reason = label = "timeout"
            except JudgeRequestError as err:
                self._count("request_errors")
                retryable, status, label = err.retryable, err.status, err.label
                reason = str(err)
            except Exception as err:  # a custom backend's failure must not stop training
                self._count("request_errors")
                retryable = True
                reason = f"{type(err).__name__}: {err}"
                label = type(err).__name__
            reason = mask_secrets(reason, self.backend.secrets())  # exception texts may quote the key
            if not retryable or attempt >= self.max_retries:
                raise JudgeRequestError(
                    f"judge request failed after {attempt + 1} attempt(s): {reason}",
                    retryable=retryable,
                    status=status,
                    label=label,
                )
            delay = min(self.backoff * 2**attempt, 30.0)
            attempt += 1
            self._count("retries")
            logger.debug("Judge request failed (%s); retry %d in %.2f s.", reason, attempt, delay)
            time.sleep(delay)

    def _judge_one(self, messages: list[dict]) -> Judgement:
        n = len(self.rubric.dimensions)
        try:
            text = self._request(messages)
        except JudgeRequestError as err:
            return Judgement(error=str(err), num_dimensions=n, failure="request", reason=err.label)
        except Exception as err:
            return Judgement(error=str(err), num_dimensions=n, failure="request", reason=type(err).__name__)
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
            judgement.reason = SCALE_FAILURE if rejected.count else PARSE_FAILURE
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
                reason=RECORD_FAILURE,
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
            self.last_batch = BatchOutcome(judgements=0, failures=0)
            return []
        judgements: list = list(built)
        to_send = [i for i, b in enumerate(built) if not isinstance(b, Judgement)]
        if to_send:
            with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(to_send))) as pool:
                for i, judgement in zip(to_send, pool.map(self._judge_one, [built[i] for i in to_send])):
                    judgements[i] = judgement
        failed = [j for j in judgements if not j.ok]
        outcome = BatchOutcome(judgements=len(judgements), failures=len(failed))
        for j in failed:
            reason = j.reason or "unknown"
            outcome.reasons[reason] = outcome.reasons.get(reason, 0) + 1
            outcome.examples.setdefault(reason, j.error or reason)
        self.last_batch = outcome
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
