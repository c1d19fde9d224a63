"""Judge backends: turn the judge's chat messages into its answer text (an OpenAI-compatible endpoint, a local
transformers model, or any callable), and the errors they raise. Used by [`~trl_latent.rewards.judge.JudgeReward`]."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from .secrets import looks_like_secret


class JudgeTimeoutError(TimeoutError):
    """The judge did not answer within the timeout."""


class JudgeRequestError(RuntimeError):
    """A judge request failed. `retryable` is false for errors a retry will not fix (e.g. HTTP 401, 404)."""

    def __init__(self, message: str, retryable: bool = True):
        super().__init__(message)
        self.retryable = retryable


class JudgeConnectionError(ConnectionError):
    """The judge endpoint cannot be reached at start-up."""


class JudgeBackend:
    """Turns judge chat messages into the judge's answer text.

    Subclasses implement `__call__(messages) -> str`, raising [`JudgeTimeoutError`] on a timeout and
    [`JudgeRequestError`] on other failures, and may override `check_connection()` (called once at start-up) and
    `secrets()` (values masked wherever the judge logs or stores an error text).
    """

    def __call__(self, messages: list[dict]) -> str:
        raise NotImplementedError

    def secrets(self) -> list[str]:
        """Secret values this backend holds (an API key), masked in every logged or stored error text."""
        return []

    def check_connection(self) -> None:
        """Raise [`JudgeConnectionError`] if the judge cannot be reached. The default does nothing."""


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
    off) so that every timeout and error is counted.

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

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 120.0,
        temperature: float = 0.0,
        max_tokens: int = 1024,
    ):
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
            raise JudgeRequestError(
                f"The judge at {self.base_url} answered HTTP {status}.",
                retryable=status >= 500 or status in (408, 429),
            ) from err
        except openai.APIError as err:
            raise JudgeRequestError(f"The judge request to {self.base_url} failed: {type(err).__name__}.") from err
        try:
            content = response.choices[0].message.content
        except (AttributeError, IndexError, TypeError) as err:
            raise JudgeRequestError(f"The judge at {self.base_url} sent a malformed chat completion.") from err
        return content or ""

    def check_connection(self) -> None:
        """Any HTTP answer from the server counts as reachable; only connection failures and timeouts raise."""
        openai = self._openai
        try:
            self._client.with_options(timeout=min(self.timeout, 10.0)).models.list()
        except (openai.APITimeoutError, openai.APIConnectionError) as err:
            raise JudgeConnectionError(
                f"Cannot reach the judge at {self.base_url} ({type(err).__name__}). Start the judge server or fix "
                f"the base URL; pass check_connection=False to JudgeReward to skip this start-up check."
            ) from err
        except openai.APIStatusError:
            pass


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
