"""The `trl-latent` command line: a thin dispatcher over subcommands.

```
trl-latent sft --config examples/recipes/qwen2.5-vl-3b/1_inverse_warmup.yaml          # stages 1-5, stock SFT
trl-latent grpo --config examples/recipes/qwen2.5-vl-3b/mmrole/6_grpo.yaml            # latent or token RL
trl-latent eval --config ...                                   # N generations per prompt, judge, diversity
trl-latent inspect --model-name-or-path out/world_sft ...      # what each latent action does
trl-latent plan Qwen/Qwen2.5-VL-7B-Instruct --stage 5 --zero zero3 --num-gpus 8 --gpu-memory 80
trl-latent demo                                                # the embedded experiment: token vs latent RL
trl-latent study --quick --cells 'grpo-*-s0'                   # its grid over objectives, seeds and ablations
trl-latent write-synthetic data/shapes --seed 0                # its task on disk, in the MMRole layout
```

The library's commands live in `trl_latent.commands`, the embedded experiment's in `trl_latent.experiments.commands`.
Each module has `add_parser(subparsers)` (or the experiment's `add_*`), which registers its parser and sets `func`, a
callable taking the parsed arguments and returning an exit code.
"""

from __future__ import annotations

import argparse
import os
import sys

from .commands import eval as eval_command
from .commands import grpo, plan, sft
from .commands import inspect as inspect_command
from .commands.running import quiet_import_notices
from .experiments import commands as experiment_commands


def _offline() -> None:
    # The CLI never downloads: every model is built in-process or read from a local folder.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


SUBCOMMANDS = [
    sft.add_parser,
    grpo.add_parser,
    eval_command.add_parser,
    inspect_command.add_parser,
    plan.add_parser,
    *experiment_commands.SUBCOMMANDS,
]


class _FlagParser(argparse.ArgumentParser):
    """An argument parser whose `--dashed-flags` also answer to `--underscored_flags`, as the stage commands' TRL
    parsers take both spellings: `trl-latent plan ... --num_gpus 4` is `--num-gpus 4`. The underscored twin is not
    listed in the help. Sub-commands' parsers are of this class too (argparse builds them with the parent's class)."""

    def add_argument(self, *names, **kwargs):
        action = super().add_argument(*names, **kwargs)
        for name in names:
            twin = "--" + name[2:].replace("-", "_")
            if name.startswith("--") and twin != name and twin not in self._option_string_actions:
                self._option_string_actions[twin] = action
        return action


def build_parser() -> argparse.ArgumentParser:
    parser = _FlagParser(prog="trl-latent", description="Latent-action RL for vision-language models.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    parser.set_defaults(_subparsers=subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `trl-latent` and `python -m trl_latent.cli`."""
    _offline()
    quiet_import_notices()  # before any command imports transformers' training stack
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # a bad flag: the command's own usage, not the top level's
        command = args._subparsers.choices.get(args.command, parser)
        command.error(f"unrecognized arguments: {' '.join(unknown)}")
    # The whole command line, recorded by commands that write results (`args.argv` is the stage commands' own).
    args.command_line = list(sys.argv[1:] if argv is None else argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
