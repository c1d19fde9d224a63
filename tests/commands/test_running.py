"""`commands.running`: how every command runs: the exit status and message of each error, its registration under the
CLI, the one import notice dropped, and the summary line."""

import argparse
import logging

import pytest

from trl_latent.commands.running import (
    BITSANDBYTES_KERNEL_LOGGER,
    BITSANDBYTES_KERNEL_NOTICE,
    CommandError,
    Interrupted,
    RunError,
    quiet_import_notices,
    register,
    run,
    summary_line,
)


@pytest.mark.parametrize(
    "error, status, printed",
    [
        (CommandError("no such file"), 2, "trl-latent x: error: no such file"),
        (
            RunError("the judge failed 3 batches in a row"),
            1,
            "trl-latent x: error: the judge failed 3 batches in a row",
        ),
        (Interrupted("interrupted: saved checkpoint-3"), 130, "trl-latent x: interrupted: saved checkpoint-3"),
        (KeyboardInterrupt(), 130, "trl-latent x: stopped at once; the work since the last checkpoint is lost."),
    ],
    ids=["bad input", "fixable stop", "interrupted", "second ctrl-c"],
)
def test_each_error_gives_its_exit_status_and_one_line(error, status, printed, capsys):
    def body(argv):
        raise error

    assert run("trl-latent x", body, []) == status
    out, err = capsys.readouterr()
    assert out == "" and err == printed + "\n"


def test_the_body_gets_the_arguments_and_its_status_is_the_commands():
    assert run("trl-latent x", lambda argv: len(argv), ["--a", "1", "--b"]) == 3


def test_a_registered_command_takes_every_token_after_its_name():
    """The command's own parser reads the tokens: `-h` and `--config` are not the CLI's to interpret."""
    parser = argparse.ArgumentParser(prog="trl-latent")
    seen = []
    register(parser.add_subparsers(), "sft", "one stage", lambda argv: seen.append(argv) or 0)
    args = parser.parse_args(["sft", "--config", "stage.yaml", "-h"])
    assert args.func(args) == 0 and seen == [["--config", "stage.yaml", "-h"]]


def test_only_the_bitsandbytes_kernel_notice_is_dropped():
    logger = logging.getLogger(BITSANDBYTES_KERNEL_LOGGER)

    def shown(message):
        return logger.filter(logging.LogRecord(logger.name, logging.WARNING, "ops.py", 1, message, None, None))

    quiet_import_notices()
    filters = list(logger.filters)
    quiet_import_notices()  # idempotent: one filter however often the commands call it
    assert logger.filters == filters
    assert not shown(f"{BITSANDBYTES_KERNEL_NOTICE}: No module named 'kernels'")
    assert shown("Some other problem with the 4-bit kernels")


def test_the_summary_line_rounds_floats_only():
    assert summary_line({"steps": 2, "loss": 0.123456, "stage": "joint"}) == "steps 2, loss 0.1235, stage joint"
