"""How every `trl-latent` command runs: its registration under the CLI, the errors a command raises and the exit status
each gives (bad input 2, a run stopped on a fixable problem 1, Ctrl-C 130), and what it prints.

Every input check raises [`CommandError`], whose message says what is wrong and what to do; the command prints it
(`trl-latent sft: error: ...`) and exits with status 2 before a model is loaded or a step runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any


class CommandError(Exception):
    """Bad input to a command: the message says what is wrong and what to do."""


class Interrupted(Exception):
    """A run stopped by Ctrl-C or SIGTERM: the message says where its checkpoint is and how to resume. Exit status
    130, as a shell gives a process stopped by Ctrl-C."""


class RunError(Exception):
    """A run that started and then stopped on a problem the user can fix (e.g. a judge that failed every judgement of
    several batches): the message says what happened, where the checkpoint is and how to resume. Exit status 1."""


def register(subparsers, name: str, help: str, main: Callable[[list[str]], int]) -> None:
    """Add `name` to the `trl-latent` subcommands. The command parses its own arguments with `TrlParser`, so this
    parser takes every token after the name as is (no option of its own, `-h` included)."""
    parser = subparsers.add_parser(name, help=help, add_help=False, prefix_chars="+")
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    parser.set_defaults(func=lambda args: main(args.argv))


# bitsandbytes' start-up line that says nothing about a trl-latent command (see `quiet_import_notices`).
BITSANDBYTES_KERNEL_LOGGER = "bitsandbytes.backends.cpu.ops"
BITSANDBYTES_KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"


class _DropBitsandbytesKernelNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return BITSANDBYTES_KERNEL_NOTICE not in record.getMessage()


def quiet_import_notices() -> None:
    """Drop bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'"
    line, which every training command would print at start-up. Called by the commands (the CLI process), never on
    import of the library: a library must not change its users' logging. Idempotent.

    Where it comes from: transformers' training stack imports peft whenever peft is installed (a trl-latent
    dependency; `transformers.trainer_utils` does `from peft import PeftModel`), `import peft` imports bitsandbytes
    whenever that is installed (`peft/helpers.py`), and bitsandbytes' CPU backend, on a CPU with AVX512-BF16, looks for
    the optional `kernels` package (a faster 4-bit matmul *on the CPU*) at import and logs this line when it is
    missing. No supported switch avoids that chain: both imports are eager, and importing only peft's submodules still
    runs `peft/__init__`. trl-latent itself imports neither peft nor bitsandbytes until a run needs them (help and the
    parsers never import them), and no command loads a quantised base, the only case the kernel concerns; so this one
    message of this one logger is dropped, and every other message still shows.
    """
    logger = logging.getLogger(BITSANDBYTES_KERNEL_LOGGER)  # created now if bitsandbytes is not imported yet
    if not any(isinstance(f, _DropBitsandbytesKernelNotice) for f in logger.filters):
        logger.addFilter(_DropBitsandbytesKernelNotice())


def run(prog: str, body: Callable[[list[str]], int], argv: Sequence[str] | None) -> int:
    """Run a command body; a [`CommandError`] is printed as `prog: error: message` and gives exit status 2, a
    [`RunError`] the same way with exit status 1."""
    quiet_import_notices()  # before the body's heavy imports
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return body(argv)
    except CommandError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    except RunError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except Interrupted as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once
        print(f"{prog}: stopped at once; the work since the last checkpoint is lost.", file=sys.stderr)
        return 130


def say(message: str) -> None:
    """Print once per job: on the main process only when launched with several processes."""
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(message, flush=True)


def summary_line(items: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in items.items())
