"""Keeping secrets out of logs, errors and `repr`: what looks like a key, which values are known secrets, masking."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

__all__ = ["known_secrets", "looks_like_secret", "mask_secrets"]

_SECRET_ENV_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.I)
# Shapes of API keys and tokens (OpenAI, Hugging Face, GitHub, Slack, AWS, bearer headers).
_KEY_SHAPES = re.compile(
    r"(?:\bsk-[A-Za-z0-9_\-]{8,}|\bhf_[A-Za-z0-9]{8,}|\bgh[pousr]_[A-Za-z0-9]{8,}|\bxox[abpr]-[A-Za-z0-9\-]{8,}"
    r"|\bAKIA[0-9A-Z]{12,}|(?<=Bearer )[A-Za-z0-9._\-]{8,})"
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def looks_like_secret(value: str) -> bool:
    """Whether `value` has the shape of an API key or token rather than, say, an environment variable's name."""
    if _KEY_SHAPES.search(value) or value.startswith("Bearer "):
        return True
    if not _ENV_NAME.fullmatch(value):
        return True  # keys hold characters ('-', '.', ...) a variable name cannot
    # A long mixed-case/digit identifier is a token, not a name such as OPENAI_API_KEY.
    return len(value) >= 24 and any(c.isdigit() for c in value) and any(c.islower() for c in value)


def known_secrets(extra: Sequence[str] = ()) -> list[str]:
    """Values to mask in anything logged: `extra` plus every environment variable whose name says it holds a key,
    token, secret or password (8 characters or more)."""
    values = [v for k, v in os.environ.items() if _SECRET_ENV_NAME.search(k) and v and len(v) >= 8]
    return sorted({*values, *(v for v in extra if v and len(v) >= 8)}, key=len, reverse=True)


def mask_secrets(text: str, secrets: Sequence[str] = ()) -> str:
    """`text` with every known secret (see [`known_secrets`]) and every key-shaped string replaced by `***`."""
    for secret in known_secrets(secrets):
        text = text.replace(secret, "***")
    return _KEY_SHAPES.sub("***", text)
