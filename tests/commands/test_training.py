"""`commands.training`: a stage command trains to the end: `--resume_from_checkpoint` (true, false or a folder), a
broken checkpoint named, and Ctrl-C saving a checkpoint the command resumes from."""

from __future__ import annotations

import logging

import torch

from tests.fixtures.bad_input import cut_short
from tests.fixtures.models import tiny_vlm_path
from trl_latent.experiments.shapes.task_data import write_synthetic_task
from trl_latent.training.latent_sft_trainer import LatentSFTTrainer


def test_stage_command_resume_true_and_a_broken_explicit_checkpoint(tiny_cache, tmp_path, caplog, capsys):
    """`trl-latent sft --resume_from_checkpoint true` resumes from the newest complete checkpoint; a broken one given
    as a path is the command's error (exit status 2) naming the file."""
    from trl_latent.cli import main

    write_synthetic_task(tmp_path / "shapes", sessions_per_file=1, ood_sessions_per_character=1, n_paired=4)
    out = tmp_path / "out"
    argv = ["sft", "--stage", "inverse_warmup", "--base_model", str(tiny_vlm_path("tiny", cache_dir=tiny_cache))]
    argv += ["--codebook_size", "8", "--inverse_layers", "1", "--policy_layers", "1"]
    argv += ["--paired_files", str(tmp_path / "shapes/pretrain/paired.json"), "--image_root", str(tmp_path / "shapes")]
    argv += ["--output_dir", str(out), "--max_steps", "2", "--per_device_train_batch_size", "2", "--save_steps", "1"]
    argv += ["--use_cpu", "true", "--bf16", "false", "--report_to", "none", "--logging_steps", "1", "--seed", "0"]
    assert main(argv) == 0
    (out / "checkpoint-2" / "trainer_state.json").unlink()  # killed while saving step 2
    capsys.readouterr()
    with caplog.at_level(logging.WARNING, logger="trl_latent.training.checkpointing"):
        assert main([*argv, "--resume_from_checkpoint", "true"]) == 0
    assert any(f"{out / 'checkpoint-2'}: it is not a complete checkpoint" in r.getMessage() for r in caplog.records)
    printed = capsys.readouterr().out
    assert "done: steps 2" in printed and printed.count("'loss':") == 1  # resumed after step 1: only step 2 ran

    cut_short(out / "checkpoint-1" / "optimizer.pt")
    assert main([*argv, "--resume_from_checkpoint", str(out / "checkpoint-1")]) == 2
    err = capsys.readouterr().err
    assert f"trl-latent sft: error: Cannot resume from {out / 'checkpoint-1'}" in err
    assert f"{out / 'checkpoint-1' / 'optimizer.pt'} cannot be read" in err


def test_ctrl_c_saves_a_checkpoint_that_the_command_resumes_from(tiny_cache, tmp_path, capsys, monkeypatch):
    """The first Ctrl-C (SIGINT) during `trl-latent sft` finishes the step, saves checkpoint-<step> and exits 130 with
    the resume command, without saving the finished model; `--resume_from_checkpoint true` then finishes the run with
    the same weights as a run never interrupted."""
    import os
    import signal

    from safetensors.torch import load_file

    from trl_latent.cli import main

    # 8 records, 2 per step: the 3 steps stay inside one epoch.
    write_synthetic_task(tmp_path / "shapes", sessions_per_file=1, ood_sessions_per_character=1, n_paired=8)
    argv = ["sft", "--stage", "inverse_warmup", "--base_model", str(tiny_vlm_path("tiny", cache_dir=tiny_cache))]
    argv += ["--codebook_size", "8", "--inverse_layers", "1", "--policy_layers", "1"]
    argv += ["--paired_files", str(tmp_path / "shapes/pretrain/paired.json"), "--image_root", str(tmp_path / "shapes")]
    argv += ["--max_steps", "3", "--per_device_train_batch_size", "2", "--save_steps", "100"]
    argv += ["--use_cpu", "true", "--bf16", "false", "--report_to", "none", "--logging_steps", "1", "--seed", "0"]
    straight, out = tmp_path / "straight", tmp_path / "out"
    assert main([*argv, "--output_dir", str(straight)]) == 0

    step = LatentSFTTrainer.training_step

    def ctrl_c_in_first_step(self, *args, **kwargs):
        if self.state.global_step == 0:
            os.kill(os.getpid(), signal.SIGINT)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(LatentSFTTrainer, "training_step", ctrl_c_in_first_step)
    capsys.readouterr()
    assert main([*argv, "--output_dir", str(out)]) == 130
    err = capsys.readouterr().err
    assert (
        f"trl-latent sft: interrupted: saved checkpoint-1 in {out}" in err and "--resume_from_checkpoint true" in err
    )
    assert "Traceback" not in err
    assert (out / "checkpoint-1" / "trainer_state.json").exists() and not (out / "model.safetensors").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back

    monkeypatch.setattr(LatentSFTTrainer, "training_step", step)
    assert main([*argv, "--output_dir", str(out), "--resume_from_checkpoint", "true"]) == 0
    printed = capsys.readouterr().out
    assert "done: steps 3" in printed and printed.count("'loss':") == 2  # steps 2 and 3 only
    resumed, reference = load_file(out / "model.safetensors"), load_file(straight / "model.safetensors")
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert torch.equal(resumed[key], reference[key]), key


def test_resume_from_checkpoint_reads_true_false_and_folders(tmp_path, monkeypatch):
    """The commands' `resume_from_checkpoint`: `true` / `false` from a flag or YAML (any case) become booleans, a folder
    stays a path, and a folder that happens to be named `true` is taken as that folder."""
    from trl_latent.commands.training import resume_argument

    assert resume_argument("true") is True and resume_argument(" True ") is True and resume_argument("false") is False
    assert resume_argument("out/checkpoint-4") == "out/checkpoint-4"
    assert resume_argument(None) is None
    monkeypatch.chdir(tmp_path)
    (tmp_path / "true").mkdir()
    assert resume_argument("true") == "true"
