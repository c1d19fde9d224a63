"""Judge backends: turn the judge's chat messages into its answer text (an OpenAI-compatible endpoint, a local
transformers model, or any callable), and the errors they raise. Used by [`~trl_latent.rewards.judge.JudgeReward`]."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from http import HTTPStatus

from .secret_masking import looks_like_secret


class JudgeTimeoutError(TimeoutError):
    """The judge did not answer within the timeout."""


def status_label(status: int) -> str:
    """`"HTTP 401 Unauthorized"`: an HTTP status with its reason phrase."""
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


class JudgeRequestError(RuntimeError):
    """A judge request failed. `retryable` is false for errors a retry will not fix (e.g. HTTP 401, 404); `status` is
    the HTTP status the judge answered, if any; `label` is a short name of the failure (`"HTTP 401 Unauthorized"`,
    `"connection error"`), by which failures are counted."""

    def __init__(self, message: str, retryable: bool = True, status: int | None = None, label: str | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.label = label or (status_label(status) if status is not None else "request error")


class JudgeConnectionError(ConnectionError):
    """The judge endpoint cannot be reached at start-up."""


class JudgeCheckError(JudgeConnectionError):
    """The judge was reached but failed the start-up test judgement: it refused it (HTTP 401, 403, 404, ...) or
    answered without a score pair the parser can read. `status` is the HTTP status, if one was answered."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class JudgeBackend:
    """Turns judge chat messages into the judge's answer text.

    Subclasses implement `__call__(messages) -> str`, raising [`JudgeTimeoutError`] on a timeout and
    [`JudgeRequestError`] on other failures, and may override `check_connection()` (called once at start-up),
    `secrets()` (values masked wherever the judge logs or stores an error text) and `advice(error)` (what to do about
    a refused request). A backend with `test_judgement_at_start_up = True` (a remote endpoint) also gets one real
    judgement at start-up ([`~trl_latent.rewards.judge.JudgeReward.check_judgement`]); local and scripted backends do
    not, since their first batch shows the same.
    """

    test_judgement_at_start_up: bool = False

    def __call__(self, messages: list[dict]) -> str:
        raise NotImplementedError

    def secrets(self) -> list[str]:
        """Secret values this backend holds (an API key), masked in every logged or stored error text."""
        return []

    def check_connection(self) -> None:
        """Raise [`JudgeConnectionError`] if the judge cannot be reached. The default does nothing."""

    def advice(self, error: JudgeRequestError) -> str:
        """What to do about a request the judge refused (shown in start-up errors). The default says nothing."""
        return ""


class CallableJudgeBackend(JudgeBackend):
    """Wraps a plain function `messages -> text` (a scripted judge in tests, a custom client, ...)."""

    def __init__(self, fn: Callable[[list[dict]], str]):
        self.fn = fn

    def __call__(self, messages: list[dict]) -> str:
        return self.fn(messages)

    def __repr__(self) -> str:
        return f"CallableJudgeBackend({getattr(self.fn, '__name__', type(self.fn).__name__)})"


class OpenAIJudgeBackend(JudgeBackend):
    """An OpenAI-compatible chat-completions endpoint (OpenAI, a vLLM or SGLang server, ...).

    The API key is read from the environment variable named `api_key_env` and is kept only inside the `openai`
    client: it is never logged and never part of `repr`. Retries are left to [`JudgeReward`] (the client's own are
    off) so that every timeout and error is counted. A refused request's error names the HTTP status and the
    server's own error text (secrets masked by [`~trl_latent.rewards.judge.JudgeReward`]).

    Args:
        base_url (`str`):
            The endpoint, e.g. `"http://localhost:8000/v1"`.
        model (`str`):
            The judge model name the server expects.
        api_key_env (`str`, *optional*, defaults to `"OPENAI_API_KEY"`):
            Name of the environment variable holding the key (not the key itself: a value shaped like a key is
            refused). Servers without authentication accept any key; if the variable is unset, the placeholder
            `"EMPTY"` is sent (vLLM's convention).
        timeout (`float`, *optional*, defaults to `120.0`):
            Seconds to wait for one answer.
        temperature (`float`, *optional*, defaults to `0.0`):
            Judge sampling temperature (the authors judge at 0).
        max_tokens (`int`, *optional*, defaults to `1024`):
            Cap on the judge's answer length.
    """

    test_judgement_at_start_up = True  # a remote endpoint: JudgeReward sends it one real judgement at start-up

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 120.0,
        temperature: float = 0.0,
        max_tokens: int = 1024,
    ):
        self.served_models: list[str] | None = None  # filled by check_connection when the server lists them
        try:
            import openai
        except ImportError as err:
            raise ImportError("The OpenAI judge backend needs `openai`: `pip install trl-latent[judge]`.") from err
        if not isinstance(api_key_env, str) or looks_like_secret(api_key_env):
            # The value is not repeated: it may be the key.
            raise ValueError(
                "api_key_env must be the NAME of the environment variable that holds the judge's API key (e.g. "
                "'OPENAI_API_KEY'), but the value given looks like a key itself. Put the key in an environment "
                "variable (`export JUDGE_API_KEY=...`) and pass api_key_env='JUDGE_API_KEY'."
            )
        self._openai = openai
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = timeout
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._client = openai.OpenAI(
            base_url=base_url, api_key=os.environ.get(api_key_env) or "EMPTY", timeout=timeout, max_retries=0
        )

    def __repr__(self) -> str:
        return (
            f"OpenAIJudgeBackend(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
            f"timeout={self.timeout})"
        )

    def secrets(self) -> list[str]:
        key = os.environ.get(self.api_key_env)
        return [key] if key else []

    def __call__(self, messages: list[dict]) -> str:
        openai = self._openai
        try:
            response = self._client.chat.completions.create(
                model=self.model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens
            )
        except openai.APITimeoutError as err:
            raise JudgeTimeoutError(f"The judge at {self.base_url} did not answer within {self.timeout} s.") from err
        except openai.APIStatusError as err:
            status = err.status_code
            text = _server_text(err.body)
            raise JudgeRequestError(
                f"The judge at {self.base_url} answered {status_label(status)}" + (f": {text}" if text else "."),
                retryable=status >= 500 or status in (408, 429),
                status=status,
            ) from err
        except openai.APIConnectionError as err:
            raise JudgeRequestError(
                f"The judge request to {self.base_url} failed: {type(err).__name__}.", label="connection error"
            ) from err
        except openai.APIError as err:
            raise JudgeRequestError(f"The judge request to {self.base_url} failed: {type(err).__name__}.") from err
        try:
            content = response.choices[0].message.content
        except (AttributeError, IndexError, TypeError) as err:
            raise JudgeRequestError(
                f"The judge at {self.base_url} sent a malformed chat completion.", label="malformed chat completion"
            ) from err
        return content or ""

    def check_connection(self) -> None:
        """Any HTTP answer from the server counts as reachable; only connection failures and timeouts raise. Whether
        the judge accepts and answers a judgement is [`~trl_latent.rewards.judge.JudgeReward.check_judgement`]'s
        test (a real request), which follows."""
        openai = self._openai
        try:
            listing = self._client.with_options(timeout=min(self.timeout, 10.0)).models.list()
        except (openai.APITimeoutError, openai.APIConnectionError) as err:
            raise JudgeConnectionError(
                f"Cannot reach the judge at {self.base_url} ({type(err).__name__}). Start the judge server or fix "
                f"the base URL; pass check_connection=False to JudgeReward to skip this start-up check."
            ) from err
        except openai.APIStatusError:
            return
        try:
            self.served_models = [str(model.id) for model in listing.data]
        except (AttributeError, TypeError):
            self.served_models = None

    def advice(self, error: JudgeRequestError) -> str:
        key_set = "set" if os.environ.get(self.api_key_env) else "not set, so the placeholder 'EMPTY' was sent"
        if error.status == 401:
            return (
                f"The judge rejected the API key: put a valid key in the environment variable {self.api_key_env} "
                f"(currently {key_set}), or name the variable that holds it with api_key_env (--judge_api_key_env)."
            )
        if error.status == 403:
            return (
                f"The key in {self.api_key_env} is not allowed to use model {self.model!r} at {self.base_url}: use a "
                "key with access to it, or another judge model."
            )
        if error.status == 404:
            served = f" The server lists: {self.served_models}." if self.served_models else ""
            return (
                f"The judge has no model {self.model!r}, or {self.base_url} is not its OpenAI-compatible base URL "
                f"(it usually ends in /v1).{served} Fix judge_model (--judge_model) or judge_base_url "
                "(--judge_base_url)."
            )
        return (
            f"Fix the request the judge refuses (model {self.model!r}, max_tokens={self.max_tokens}) or the server; "
            "every judgement of a run would fail the same way."
        )


def _server_text(body, limit: int = 300) -> str:
    """The error text a server put in its answer's body (OpenAI's and vLLM's `{"message": ...}`), cut to `limit`."""
    if isinstance(body, dict):
        nested = body.get("error")
        if isinstance(nested, dict):
            body = nested
        text = body.get("message") or body.get("detail") or body.get("error") or json.dumps(body)
    elif body is None:
        text = ""
    else:
        text = body.decode(errors="replace") if isinstance(body, bytes) else body
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class TransformersJudgeBackend(JudgeBackend):
    """A local transformers causal LM as the judge (greedy decoding, one request at a time).

    Args:
        model (`transformers.PreTrainedModel`):
            A causal language model.
        tokenizer (`transformers.PreTrainedTokenizerBase`):
            Its tokenizer, with a chat template.
        max_new_tokens (`int`, *optional*, defaults to `1024`):
            Cap on the judge's answer length.
    """

    def __init__(self, model, tokenizer, max_new_tokens: int = 1024):
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"TransformersJudgeBackend({type(self.model).__name__}, max_new_tokens={self.max_new_tokens})"

    def __call__(self, messages: list[dict]) -> str:
        import torch

        with self._lock, torch.no_grad():
            inputs = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            ).to(self.model.device)
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        return self.tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
