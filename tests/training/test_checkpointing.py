"""Kill-and-resume: every stage and latent RL continue a run exactly, and checkpoints load in either key layout.

Each test runs a stage for 4 steps with a checkpoint at step 2 (the state a run killed after step 2 leaves behind),
then builds a fresh trainer on a fresh copy of the same initial model and resumes from that checkpoint. The resumed
run must end bit-identical to the uninterrupted one: every parameter (the base included where it trains), the last
logged loss terms, and for RL with `sync_ref_model` the TR-DPO reference policy and its KL. Transformers' missing-keys
notice must not be printed on any resume (it used to be printed on every one, hiding the real data loss of world-model
SFT, whose checkpoints store the base in Qwen2.5-VL's release key layout).

`resume_from_checkpoint=True` takes the newest *complete* checkpoint: a folder a kill during `save` left behind (no
`trainer_state.json`, weights cut short) is skipped with a warning naming it, and the run resumed from the checkpoint
before it ends bit-identical to the uninterrupted run. A broken checkpoint given explicitly fails naming the file.
"""

from __future__ import annotations

import copy
import logging
import shutil

import pytest
import torch
from safetensors import safe_open

from tests.fixtures.bad_input import (
    Case,
    bad_input_test,
    cut_short,
    no_complete_checkpoint,
    resume_explicit,
    resume_true_skips,
    truncate_file,
)
from tests.fixtures.models import tiny_vlm, tiny_vlm_path
from trl_latent.data.pretrain import load_pretrain_corpus
from trl_latent.experiments.shapes.task_data import synthetic_rl_dataset, synthetic_sft_dataset, write_synthetic_task
from trl_latent.modeling import LatentActionModel
from trl_latent.training.checkpointing import CheckpointError
from trl_latent.training.latent_grpo_config import LatentGRPOConfig
from trl_latent.training.latent_grpo_trainer import REFERENCE_POLICY_FILE, LatentGRPOTrainer
from trl_latent.training.latent_sft_config import LatentSFTConfig
from trl_latent.training.latent_sft_trainer import LatentSFTTrainer

STEPS, SAVE_AT = 4, 2


@pytest.fixture(scope="module")
def env(tiny_cache, tmp_path_factory):
    path = tiny_vlm_path("tiny", cache_dir=tiny_cache)
    root = tmp_path_factory.mktemp("resume_task")
    task = write_synthetic_task(root, n_paired=16, n_text_only=16, sessions_per_file=1, ood_sessions_per_character=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        initial = LatentActionModel.from_base(path, codebook_size=16, inverse_layers=1, policy_layers=1)
    return {
        "processor": tiny_vlm("tiny", cache_dir=tiny_cache)[1],
        "initial": initial,
        "paired": load_pretrain_corpus(task.path(task.paired_file), image_root=root).paired,
        "text": load_pretrain_corpus(task.path(task.text_only_file)).text,
        "dialogues": synthetic_sft_dataset(16, seed=0),
        "prompts": synthetic_rl_dataset(16, seed=0),
    }


class _Notices(logging.Handler):
    """Collects transformers' checkpoint-loading notices (its loggers do not propagate to pytest's caplog)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def notices():
    handler = _Notices()
    logger = logging.getLogger("transformers.trainer")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def sft_run(env, out, stage, lora=False, resume=None, steps=STEPS, save_at=SAVE_AT, **config):
    from peft import LoraConfig

    model = copy.deepcopy(env["initial"])
    args = LatentSFTConfig(
        str(out),
        stage=stage,
        max_steps=steps,
        save_strategy="steps",
        save_steps=save_at,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        report_to="none",
        disable_tqdm=True,
        seed=0,
        **config,
    )
    trainer = LatentSFTTrainer(
        model,
        args,
        train_dataset=env["dialogues"] if stage == "world_sft" else env["paired"],
        text_dataset=env["text"] if stage in ("joint", "policy_bc") else None,
        processing_class=env["processor"],
        peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0) if lora else None,
    )
    trainer.train(resume_from_checkpoint=resume)
    return model, trainer


def last_log(trainer) -> dict:
    return [h for h in trainer.state.log_history if "loss" in h][-1]


def assert_same_parameters(a, b):
    for (name, x), (name_b, y) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert name == name_b
        assert torch.equal(x, y), f"{name} differs after resuming"


@pytest.mark.parametrize(
    "stage, lora",
    [
        ("inverse_warmup", False),
        ("projector_warmup", False),
        ("joint", False),
        ("policy_bc", False),
        ("world_sft", False),
        ("world_sft", True),
    ],
    ids=["1-inverse_warmup", "2-projector_warmup", "3-joint", "4-policy_bc", "5-world_sft", "5-world_sft-lora"],
)
def test_stage_resumes_bit_identical(env, tmp_path, notices, stage, lora):
    straight, trainer = sft_run(env, tmp_path / "run", stage, lora)
    checkpoint = tmp_path / "run" / f"checkpoint-{SAVE_AT}"
    before_resume = len(notices)
    resumed, resumed_trainer = sft_run(env, tmp_path / "run", stage, lora, resume=str(checkpoint))
    assert resumed_trainer.state.global_step == STEPS
    assert_same_parameters(straight, resumed)
    assert last_log(resumed_trainer) == last_log(trainer)
    assert not [m for m in notices[before_resume:] if "keys in the checkpoint" in m], notices[before_resume:]
    if stage == "world_sft" and not lora:
        # The trained base is in the checkpoint, in the release layout transformers saves Qwen2.5-VL in, and it is
        # what the resumed run continued from (before the fix it continued from the original base).
        with safe_open(str(checkpoint / "model.safetensors"), "pt") as f:
            keys = list(f.keys())
        assert any(k.startswith("base.model.layers.") for k in keys)
        assert not any(k.startswith("base.model.language_model.") for k in keys)
        changed = [
            n for n, p in straight.base.named_parameters() if not torch.equal(p, env["initial"].base.get_parameter(n))
        ]
        assert changed, "world_sft should have changed the base"


def test_a_resume_across_an_epoch_boundary(env, tmp_path):
    """16 paired records at batch 4 are 4 steps an epoch, so 6 steps cross into the second epoch. Without the base-state
    cache a run resumed at the boundary (step 4) ends bit-identical to the straight
    run. With it (the default), the straight run's second epoch reads the frozen base's states cached from first-epoch
    batches, while a resumed run computes them again in second-epoch batches, padded to other widths: the same states
    to float rounding, not bit for bit (docs/stages.md, "Resuming")."""
    kwargs = dict(steps=6, save_at=1)
    for cache in (False, True):
        out = tmp_path / f"run-cache-{cache}"
        straight, trainer = sft_run(env, out, "inverse_warmup", cache_base_states=cache, **kwargs)
        resume = str(out / "checkpoint-4")
        resumed, resumed_trainer = sft_run(
            env, out, "inverse_warmup", resume=resume, cache_base_states=cache, **kwargs
        )
        assert resumed_trainer.state.global_step == 6
        if not cache:
            assert last_log(resumed_trainer) == last_log(trainer)
            assert_same_parameters(straight, resumed)
            continue
        for (name, a), b in zip(straight.named_parameters(), resumed.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def test_checkpoint_loads_in_either_key_layout(env, tmp_path):
    """`load_saved_weights` takes the release layout transformers saves and the in-memory layout alike."""
    from safetensors.torch import save_file

    model = copy.deepcopy(env["initial"])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    model.mark_base_modified()
    model.save_pretrained(tmp_path / "release_layout")
    memory_layout = tmp_path / "memory_layout"
    memory_layout.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(memory_layout / "model.safetensors"))
    for folder in (tmp_path / "release_layout", memory_layout):
        target = copy.deepcopy(env["initial"])
        target.load_saved_weights(folder)
        assert_same_parameters(model, target)


def test_resume_true_skips_checkpoints_a_killed_save_left(env, tmp_path, notices, caplog):
    """`resume_from_checkpoint=True` passes over the broken newer folders to the newest complete checkpoint."""
    run = tmp_path / "run"
    straight, trainer = sft_run(env, run, "inverse_warmup")
    # checkpoint-4: its weights cut short (trainer_state.json kept, so only the weights check can catch it).
    cut_short(run / f"checkpoint-{STEPS}" / "model.safetensors")
    # checkpoint-3: killed before trainer_state.json, the last file transformers writes (weights all there).
    shutil.copytree(run / f"checkpoint-{SAVE_AT}", run / "checkpoint-3")
    (run / "checkpoint-3" / "trainer_state.json").unlink()
    before_resume = len(notices)
    with caplog.at_level(logging.WARNING, logger="trl_latent.training.checkpointing"):
        resumed, resumed_trainer = sft_run(env, run, "inverse_warmup", resume=True)
    skipped = [r.getMessage() for r in caplog.records if r.name == "trl_latent.training.checkpointing"]
    assert len(skipped) == 2, skipped
    assert f"{run / f'checkpoint-{STEPS}'}:" in skipped[0] and "model.safetensors cannot be read" in skipped[0]
    assert f"{run / 'checkpoint-3'}:" in skipped[1] and "trainer_state.json is missing" in skipped[1]
    # Resumed from checkpoint-2: steps 3 and 4 again, ending where the uninterrupted run ended.
    assert resumed_trainer.state.global_step == STEPS
    assert [h["step"] for h in resumed_trainer.state.log_history if "loss" in h] == list(range(1, STEPS + 1))
    assert_same_parameters(straight, resumed)
    assert last_log(resumed_trainer) == last_log(trainer)
    assert not [m for m in notices[before_resume:] if "keys in the checkpoint" in m], notices[before_resume:]

    # Given explicitly, a broken checkpoint fails naming the file, before any step (here a cut-short optimizer.pt,
    # which torch alone reports as a zip error without naming the file).
    cut_short(run / f"checkpoint-{SAVE_AT}" / "optimizer.pt")
    with pytest.raises(
        CheckpointError, match=rf"checkpoint-{SAVE_AT}/optimizer.pt cannot be read.*earlier checkpoint"
    ):
        sft_run(env, run, "inverse_warmup", resume=str(run / f"checkpoint-{SAVE_AT}"))
    # With True and nothing complete left, it says so, naming every folder and why.
    (run / f"checkpoint-{STEPS}" / "model.safetensors").unlink()  # the resumed run rewrote checkpoint-4
    with pytest.raises(FileNotFoundError, match=r"no checkpoint in .* is complete: checkpoint-4 \(.*checkpoint-2 \("):
        sft_run(env, run, "inverse_warmup", resume=True)


# --------------------------------------------------------------------------------------------------- latent RL
def grpo_run(env, out, resume=None, lora=False):
    from peft import LoraConfig

    from trl_latent.training.latent_grpo_trainer import POLICY_LORA_TARGET_MODULES

    model = copy.deepcopy(env["initial"])
    args = LatentGRPOConfig(
        str(out),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=6,
        max_steps=STEPS,
        learning_rate=1e-2,
        beta=0.1,
        sync_ref_model=True,
        ref_model_sync_steps=1,
        ref_model_mixup_alpha=0.5,
        save_strategy="steps",
        save_steps=SAVE_AT,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    trainer = LatentGRPOTrainer(
        model,
        reward_funcs=lambda completions, **kw: [float(len(c[0]["content"])) for c in completions],
        args=args,
        train_dataset=env["prompts"],
        processing_class=env["processor"],
        peft_config=(
            LoraConfig(r=4, lora_alpha=8, target_modules=POLICY_LORA_TARGET_MODULES, lora_dropout=0.0)
            if lora
            else None
        ),
    )
    trainer.train(resume_from_checkpoint=resume)
    return model, trainer


def test_latent_grpo_with_reference_sync_resumes_bit_identical(env, tmp_path, notices):
    straight, trainer = grpo_run(env, tmp_path / "run")
    checkpoint = tmp_path / "run" / f"checkpoint-{SAVE_AT}"
    assert (checkpoint / REFERENCE_POLICY_FILE).is_file()
    before_resume = len(notices)
    resumed, resumed_trainer = grpo_run(env, tmp_path / "run", resume=str(checkpoint))
    assert_same_parameters(straight, resumed)
    # The reference moved with the policy (alpha 0.5 each step) and continued from the checkpoint's, not the start.
    for a, b in zip(trainer._reference_policy().parameters(), resumed_trainer._reference_policy().parameters()):
        assert torch.equal(a, b)
    assert not all(
        torch.equal(a, b) for a, b in zip(trainer._reference_policy().parameters(), env["initial"].policy.parameters())
    )
    kl = [h["latent/kl"] for h in trainer.state.log_history if "latent/kl" in h]
    resumed_kl = [h["latent/kl"] for h in resumed_trainer.state.log_history if "latent/kl" in h]
    assert len(kl) == STEPS and resumed_kl == kl  # the resumed history holds the checkpoint's first steps
    assert max(kl[SAVE_AT:]) > 0.0  # the policy moved away from the resumed reference
    assert not [m for m in notices[before_resume:] if "keys in the checkpoint" in m], notices[before_resume:]

    # A checkpoint without the reference (e.g. written before it was saved) cannot continue exactly: refused.
    (checkpoint / REFERENCE_POLICY_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{REFERENCE_POLICY_FILE} is missing.*sync_ref_model=True"):
        grpo_run(env, tmp_path / "run", resume=str(checkpoint))


def test_latent_grpo_lora_with_reference_sync_resumes_bit_identical(env, tmp_path):
    """LoRA on the policy with TR-DPO (`sync_ref_model`, synced every step, so before and after the interruption): the
    reference is the policy with its adapter merged, mixed each step, saved with the adapter, and the resumed run
    ends bit-identical (adapter, frozen weights, reference, KL history)."""
    straight, trainer = grpo_run(env, tmp_path / "run", lora=True)
    checkpoint = tmp_path / "run" / f"checkpoint-{SAVE_AT}"
    assert (checkpoint / "adapter_model.safetensors").is_file() and (checkpoint / REFERENCE_POLICY_FILE).is_file()
    resumed, resumed_trainer = grpo_run(env, tmp_path / "run", resume=str(checkpoint), lora=True)
    assert any("lora_B" in name for name, _ in straight.named_parameters())
    assert_same_parameters(straight, resumed)
    reference, resumed_reference = trainer._reference_policy(), resumed_trainer._reference_policy()
    assert reference is not None
    for (name, a), b in zip(reference.named_parameters(), resumed_reference.parameters(), strict=True):
        assert torch.equal(a, b), f"reference {name} differs after resuming"
    # The reference moved with the adapted policy (its merged LoRA weights), away from the starting policy.
    start = env["initial"].policy.state_dict()
    moved = [n for n, p in reference.named_parameters() if not torch.equal(p, start[n])]
    assert any(".self_attn.q_proj.weight" in n for n in moved), moved
    kl = [h["latent/kl"] for h in trainer.state.log_history if "latent/kl" in h]
    assert len(kl) == STEPS and kl == [h["latent/kl"] for h in resumed_trainer.state.log_history if "latent/kl" in h]
    assert max(kl[SAVE_AT:]) > 0.0


# --------------------------------------------------------------------------------------------------- token RL
def token_grpo_run(tiny_cache, out, resume=None):
    from datasets import Dataset
    from trl import GRPOConfig

    from tests.fixtures.models import tiny_lm
    from trl_latent.training.token_grpo_trainer import TokenGRPOTrainer

    model, tokenizer = tiny_lm("tiny", cache_dir=tiny_cache)
    prompts = [[{"role": "user", "content": f"Which colour is the {shape}?"}] for shape in ("circle", "square")] * 8
    args = GRPOConfig(
        str(out),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=6,
        max_steps=STEPS,
        learning_rate=1e-2,
        save_strategy="steps",
        save_steps=SAVE_AT,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        report_to="none",
        disable_tqdm=True,
        gradient_checkpointing=False,
        seed=0,
    )
    trainer = TokenGRPOTrainer(
        model,
        reward_funcs=lambda completions, **kw: [float(len(c[0]["content"])) for c in completions],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
    )
    trainer.train(resume_from_checkpoint=resume)
    return model, trainer


def test_token_grpo_resume_true_skips_a_killed_save(tiny_cache, tmp_path, caplog):
    """TokenGRPOTrainer resolves `resume_from_checkpoint=True` the same way: the last folder, whose save was killed
    before trainer_state.json, is skipped, and the run resumed from the one before ends bit-identical."""
    run = tmp_path / "run"
    straight, trainer = token_grpo_run(tiny_cache, run)
    (run / f"checkpoint-{STEPS}" / "trainer_state.json").unlink()
    with caplog.at_level(logging.WARNING, logger="trl_latent.training.checkpointing"):
        resumed, resumed_trainer = token_grpo_run(tiny_cache, run, resume=True)
    assert any(f"{run / f'checkpoint-{STEPS}'}:" in r.getMessage() for r in caplog.records)
    assert resumed_trainer.state.global_step == STEPS
    assert_same_parameters(straight, resumed)
    wall_clock = {"step_time"}
    assert {k: v for k, v in last_log(resumed_trainer).items() if k not in wall_clock} == {
        k: v for k, v in last_log(trainer).items() if k not in wall_clock
    }


# ------------------------------------------------------------------------------------------------ bad input
BAD_INPUT = [
    Case(
        "checkpoint/no_trainer_state_skipped_by_resume_true",
        lambda c: resume_true_skips(c, lambda folder: (folder / "trainer_state.json").unlink()),
        fragments=("Not resuming from {dir}/run/checkpoint-2", "trainer_state.json is missing"),
        count=1,
    ),
    Case(
        "checkpoint/weights_cut_short_skipped_by_resume_true",
        lambda c: resume_true_skips(c, lambda folder: truncate_file(folder / "model.safetensors")),
        fragments=("Not resuming from {dir}/run/checkpoint-2", "model.safetensors cannot be read", "cut short"),
        count=1,
    ),
    Case(
        "checkpoint/optimizer_cut_short",
        lambda c: resume_explicit(c, "optimizer.pt"),
        CheckpointError,
        (
            "Cannot resume from {dir}/run/checkpoint-2: {dir}/run/checkpoint-2/optimizer.pt cannot be read",
            "cut short",
            "earlier checkpoint",
        ),
    ),  # fmt: skip
    Case(
        "checkpoint/scheduler_cut_short",
        lambda c: resume_explicit(c, "scheduler.pt"),
        CheckpointError,
        ("{dir}/run/checkpoint-2/scheduler.pt cannot be read", "earlier checkpoint"),
    ),
    Case(
        "checkpoint/rng_state_cut_short",
        lambda c: resume_explicit(c, "rng_state*.pth"),
        CheckpointError,
        ("{dir}/run/checkpoint-2/rng_state", ".pth cannot be read", "earlier checkpoint"),
    ),
    Case(
        "checkpoint/weights_cut_short",
        lambda c: resume_explicit(c, "model.safetensors"),
        CheckpointError,
        ("{dir}/run/checkpoint-2/model.safetensors cannot be read", "earlier checkpoint"),
    ),
    Case(
        "checkpoint/none_complete_with_resume_true",
        no_complete_checkpoint,
        FileNotFoundError,
        (
            "resume_from_checkpoint=True, but no checkpoint in {dir}/run is complete",
            "checkpoint-2 ({dir}/run/checkpoint-2/trainer_state.json is missing",
            "checkpoint-1 ({dir}/run/checkpoint-1/model.safetensors cannot be read",
            "without resume_from_checkpoint",
        ),
    ),  # fmt: skip
]


test_bad_input = bad_input_test(BAD_INPUT, model=True)
