"""TRL-style argument parsing for the commands: YAML configs and flags through `TrlParser`, unknown keys named with the
closest known one.

A config may build on another: `extends: other.yaml` (a path relative to the extending file) takes every key of that
file, then the extending file's own keys win, and the command line wins over both (an `env` mapping is merged key by
key). The 7B recipes are the 3B ones plus their differences this way. TRL's parser is handed the merged file.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path

from .running import CommandError

CONFIG_HELP = (
    "Options come from a YAML file, --config FILE.yaml (its keys are the option names below, without the dashes), "
    "and from the command line, which wins over the file. Launch under accelerate with "
    "`accelerate launch --config_file ACCELERATE.yaml -m trl_latent.cli {command} --config FILE.yaml`. A config "
    "may start from another with `extends: OTHER.yaml` (relative to it); its own keys win."
)
EXTENDS = "extends"


def trl_parser(dataclass_types: tuple, prog: str, summary: str):
    """A `TrlParser` whose help says how the YAML config and the command line combine."""
    from trl import TrlParser

    command = prog.split()[-1]
    return TrlParser(dataclass_types, prog=prog, description=f"{summary} {CONFIG_HELP.format(command=command)}")


def _config_path(argv: list[str]) -> Path | None:
    if "--config" not in argv:
        return None
    index = argv.index("--config")
    if index + 1 >= len(argv):
        raise CommandError("--config needs the path of a YAML file, e.g. --config examples/recipes/.../stage.yaml.")
    return Path(argv[index + 1])


def _mapping(path: Path, named_by: str | None = None) -> dict:
    import yaml

    if not path.is_file():
        if named_by is not None:
            raise CommandError(f"{named_by}: extends {path}, which does not exist.")
        raise CommandError(
            f"config file {path} not found (working directory {Path.cwd()}). Pass --config the path of a YAML "
            "file, e.g. one of the recipes under examples/recipes/."
        )
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise CommandError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(config, dict):
        raise CommandError(f"{path} must hold a YAML mapping of option: value lines, got {type(config).__name__}.")
    return config


def load_config(path, _chain: tuple[Path, ...] = ()) -> dict:
    """The YAML config at `path` with what it `extends` merged in: the extended file's keys, then this file's (an `env`
    mapping merged key by key). Chains are followed; a loop, a missing file or a non-string `extends` is a
    `CommandError` naming the files."""
    path = Path(path)
    config = _mapping(path, named_by=str(_chain[-1]) if _chain else None)
    parent = config.pop(EXTENDS, None)
    if parent is None:
        return config
    if not isinstance(parent, str) or not parent.strip():
        raise CommandError(f"{path}: extends takes the path of another YAML config, got {parent!r}.")
    parent_path = Path(os.path.normpath(path.parent / parent))
    chain = (*_chain, path)
    if parent_path.resolve() in {p.resolve() for p in chain}:
        raise CommandError(
            f"{path}: extends {parent} makes a loop ({' -> '.join(str(p) for p in (*chain, parent_path))})."
        )
    merged = load_config(parent_path, chain)
    env = {**(merged.get("env") or {}), **(config.get("env") or {})}
    merged.update(config)
    if env:
        merged["env"] = env
    return merged


def read_config(argv: list[str]) -> tuple[Path | None, dict]:
    """The `--config` YAML file named in `argv` (path and mapping, with what it `extends` merged in), checked to exist
    and hold a mapping."""
    path = _config_path(argv)
    if path is None:
        return None, {}
    return path, load_config(path)


def peek(argv: list[str], key: str, default: str) -> str:
    """The value of `key` from the command line (`--key value`) or else the YAML config, before full parsing (it
    decides which configuration class the parser is built from)."""
    flag = f"--{key}"
    for index, token in enumerate(argv):
        if token == flag and index + 1 < len(argv):
            return argv[index + 1]
        if token.startswith(flag + "="):
            return token.split("=", 1)[1]
    _, config = read_config(argv)
    return str(config.get(key, default))


def _check_keys(parser, config: dict, path: Path, prog: str) -> None:
    actions = {action.dest: action for action in parser._actions if action.dest != "help"}
    unknown = [key for key in config if key not in actions and key != "env"]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(actions), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise CommandError(
            f"{path}: unknown key(s) {', '.join(hints)}. Remove or rename them; `{prog} --help` lists every valid key."
        )
    for key, value in config.items():
        choices = getattr(actions.get(key), "choices", None)
        if choices and value not in choices:
            raise CommandError(f"{path}: {key}: {value!r} is not one of {list(choices)}.")


def parse(parser, argv: list[str], prog: str) -> tuple:
    """`TrlParser.parse_args_and_config` with clear errors for a missing or malformed config file, unknown keys or
    values outside their choices, and invalid field combinations (a configuration class's own checks). A config that
    `extends` another is handed to TRL's parser merged."""
    path, config = read_config(argv)
    if path is not None:
        _check_keys(parser, config, path, prog)
    merged = None
    if path is not None and EXTENDS in _mapping(path):
        import yaml

        with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix=f"{path.stem}-merged-", delete=False) as handle:
            yaml.safe_dump(config, handle)
            merged = handle.name
        index = argv.index("--config")
        argv = [*argv[: index + 1], merged, *argv[index + 2 :]]
    try:
        return parser.parse_args_and_config(argv)
    except (ValueError, TypeError, NotImplementedError) as err:
        where = f" ({path} with the command-line overrides)" if path is not None else ""
        raise CommandError(f"invalid configuration{where}: {err}") from err
    finally:
        if merged is not None:
            os.unlink(merged)
