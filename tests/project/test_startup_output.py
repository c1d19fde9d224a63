"""What a clean command run prints on stderr: progress bars only, no warning the project could have avoided.

Each command runs in its own process, as a user starts it (`python -m trl_latent.cli ...`), on the tiny model at tiny
size. Known noise that used to be printed (and must not come back):

- bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community: No module named 'kernels'", at every
  start-up: transformers' training stack imports peft, peft imports bitsandbytes, and bitsandbytes looks for an optional
  CPU kernel package at import. trl-latent's own imports are lazy (help, the parsers and `plan` without LoRA import
  neither peft nor bitsandbytes) and the commands drop that one line (`commands.running.quiet_import_notices`).
- transformers' "The tokenizer has new PAD/BOS/EOS tokens that differ from the model config", at every first stage: the
  latent model's config now carries its base's special-token ids.

Third-party output that remains, and why it cannot be avoided:

- progress bars on stderr (transformers' "Loading weights" / "Writing model shards", the Trainer's step bar): progress,
  not warnings; `disable_tqdm` and transformers' progress-bar settings turn them off;
- on stdout, on a machine without a GPU, DeepSpeed's "Setting accelerator to CPU" (transformers imports DeepSpeed when
  it is installed, the `deepspeed` extra; on a GPU machine it is not printed). It is not on stderr, so not checked here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

KNOWN_NOISE = (
    "Failed to load CPU gemm_4bit_forward from kernels-community",
    "The tokenizer has new PAD/BOS/EOS tokens",
)
# A progress-bar frame: "Loading weights:  50%|#####     | 1/2 [00:00<00:00, 12.3it/s]" (tqdm redraws with \r).
PROGRESS = re.compile(r"^(?:[\w ]+: *)?\d+%\|[^|]*\| *\d+/\d+ \[[^\]]*\]$")


def run_cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "trl_latent.cli", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=540
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def unexpected_lines(stderr: str) -> list[str]:
    """The stderr lines that are not progress-bar frames."""
    frames = (line.strip() for line in re.split(r"[\r\n]", stderr))
    return [line for line in frames if line and not PROGRESS.match(line)]


def assert_quiet(stderr: str) -> None:
    for noise in KNOWN_NOISE:
        assert noise not in stderr, f"known start-up noise is back: {noise!r}\n{stderr[-3000:]}"
    assert unexpected_lines(stderr) == [], "stderr holds more than progress bars:\n" + "\n".join(
        unexpected_lines(stderr)
    )


@pytest.fixture(scope="module")
def tiny(tiny_cache) -> str:
    from tests.fixtures.models import tiny_vlm_path

    return str(tiny_vlm_path("tiny", cache_dir=tiny_cache))


def test_cli_import_loads_no_training_stack(tmp_path):
    """Importing the CLI (every command's parser) imports neither peft nor bitsandbytes nor transformers' training
    stack: those come with a command that trains."""
    code = (
        "import sys, trl_latent.cli\n"
        "heavy = [m for m in ('peft', 'bitsandbytes', 'kernels', 'transformers.training_args') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]", result.stdout
    assert result.stderr == ""


def test_plan_prints_no_warning(tiny, tmp_path):
    help_run = run_cli("plan", "--help", cwd=tmp_path)
    assert "usage: trl-latent plan" in help_run.stdout and help_run.stderr == ""
    for stage in (["1"], ["grpo", "--lora-r", "4"]):  # LoRA: the planner builds a PEFT model, so peft is imported
        result = run_cli("plan", tiny, "--stage", *stage, "--num-gpus", "1", "--gpu-memory", "16", cwd=tmp_path)
        assert "Fits:" in result.stdout
        assert_quiet(result.stderr)


def test_one_step_sft_prints_no_warning(tiny, tmp_path):
    from trl_latent.experiments.shapes.task_data import write_synthetic_task

    write_synthetic_task(
        tmp_path / "shapes", sessions_per_file=1, ood_sessions_per_character=1, n_paired=4, n_text_only=4
    )
    result = run_cli(
        *("sft", "--stage", "inverse_warmup", "--base_model", tiny),
        *("--codebook_size", "8", "--inverse_layers", "1", "--policy_layers", "1"),
        *("--paired_files", "shapes/pretrain/paired.json", "--image_root", "shapes", "--output_dir", "out"),
        *("--max_steps", "1", "--per_device_train_batch_size", "2", "--logging_steps", "1", "--save_strategy", "no"),
        *("--use_cpu", "true", "--bf16", "false", "--report_to", "none"),
        cwd=tmp_path,
    )
    assert "stage inverse_warmup done: steps 1" in result.stdout
    assert_quiet(result.stderr)
