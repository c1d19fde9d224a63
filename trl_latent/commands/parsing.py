"""TRL-style argument parsing for the commands: YAML configs and flags through `TrlParser`, unknown keys named with the
closest known one."""

from __future__ import annotations

import difflib
from pathlib import Path

from .running import CommandError

CONFIG_HELP = (
    "Options come from a YAML file, --config FILE.yaml (its keys are the option names below, without the dashes), "
    "and from the command line, which wins over the file. Launch under accelerate with "
    "`accelerate launch --config_file ACCELERATE.yaml -m trl_latent.cli {command} --config FILE.yaml`."
)


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


def read_config(argv: list[str]) -> tuple[Path | None, dict]:
    """The `--config` YAML file named in `argv` (path and mapping), checked to exist and hold a mapping."""
    import yaml

    path = _config_path(argv)
    if path is None:
        return None, {}
    if not path.is_file():
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
    return path, config


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
    values outside their choices, and invalid field combinations (a configuration class's own checks)."""
    path, config = read_config(argv)
    if path is not None:
        _check_keys(parser, config, path, prog)
    try:
        return parser.parse_args_and_config(argv)
    except (ValueError, TypeError, NotImplementedError) as err:
        where = f" ({path} with the command-line overrides)" if path is not None else ""
        raise CommandError(f"invalid configuration{where}: {err}") from err
