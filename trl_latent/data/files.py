"""Reading the JSON and JSON-lines files of the datasets, with errors that name the file, the line and the fix.

The loaders (`pretrain`, `mmrole`, `pcogalign`) read their files through here, so an empty, truncated or non-UTF-8
file fails the same way everywhere: with the file's path, where the problem is, and what to do, instead of
`JSONDecodeError: Expecting value: line 1 column 1 (char 0)` or a `UnicodeDecodeError` from three levels down.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["DataFileError", "read_json_file", "read_jsonl_file"]


class DataFileError(ValueError):
    """A data file cannot be read as the format it should hold (empty, truncated, not UTF-8, not JSON)."""


def _text(path: Path, what: str, error_cls: type[ValueError]) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist.")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # a UTF-8 byte-order mark is fine
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise error_cls(
            f"{what} {path} is not UTF-8 text (byte {err.start}, line {line}: {err.reason}). Save it as UTF-8 (e.g. "
            f"`iconv -f <its encoding> -t utf-8`), or fetch the original file again."
        ) from None


def _ends_early(text: str) -> bool:
    """Whether the JSON text stops inside a string or with brackets still open (a truncated file)."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
    return in_string or depth > 0


def _decode_error(path: Path, what: str, text: str, err: json.JSONDecodeError, where: str = "") -> str:
    at_end = err.pos >= len(text.rstrip()) or _ends_early(text)
    problem = (
        "it ends before the JSON is complete: the file looks truncated (an interrupted download or copy?); fetch it "
        "again"
        if at_end
        else "fix the file or fetch it again"
    )
    return f"{what} {path}{where} is not valid JSON ({err.msg} at line {err.lineno} column {err.colno}): {problem}."


def read_json_file(path, what: str = "File", expect: str = "JSON", error_cls: type[ValueError] = DataFileError) -> Any:
    """The parsed content of a JSON file. `what` names the file's role in messages ("MMRole dialogue file"),
    `expect` says what it should hold ("a JSON list of sessions")."""
    path = Path(path)
    text = _text(path, what, error_cls)
    if not text.strip():
        raise error_cls(f"{what} {path} is empty; it must hold {expect}. Fetch or write the file again.")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise error_cls(_decode_error(path, what, text, err)) from None


def read_jsonl_file(
    path,
    what: str = "File",
    skip_bad_lines: bool = False,
    error_cls: type[ValueError] = DataFileError,
) -> tuple[list[tuple[int, Any]], list[str]]:
    """The `(line number, parsed value)` pairs of a JSON-lines file, and a description of each line skipped.

    A line that is not valid JSON (or not UTF-8) raises naming the file and line, or, with `skip_bad_lines`, is
    skipped, described in the second list and warned about. Blank lines are ignored; an empty file raises."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist.")
    records, skipped = [], []
    lines = path.read_bytes().split(b"\n")
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            records.append((number, json.loads(line)))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            if isinstance(err, UnicodeDecodeError):
                problem = f"is not UTF-8 text ({err.reason})"
            else:
                last = number == len(lines) or (number == len(lines) - 1 and not lines[-1].strip())
                problem = f"is not valid JSON ({err.msg} at column {err.colno})" + (
                    "; the file looks truncated" if last else ""
                )
            message = f"{what} {path} line {number} {problem}"
            if not skip_bad_lines:
                raise error_cls(
                    f"{message}. Fix or delete the line, or pass skip_bad_records=True to skip such lines (counted)."
                ) from None
            skipped.append(message)
            logger.warning("Skipping a bad line: %s.", message)
    if not records and not skipped:
        raise error_cls(f"{what} {path} is empty; it must hold one JSON record per line. Fetch or write it again.")
    return records, skipped
