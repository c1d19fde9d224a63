"""Kill-and-resume: every stage and latent RL continue a run exactly, and checkpoints load in either key layout.

Each test runs a stage for 4 steps with a checkpoint at step 2 (the state a run killed after step 2 leaves behind),
then builds a fresh trainer on a fresh copy of the same initial model and resumes from that checkpoint. The resumed
run must end bit-identical to the uninterrupted one: every parameter (the base included where it trains), the last
logged loss terms, and for RL with `sync_ref_model` the TR-DPO reference policy and its KL. Transformers' missing-keys
notice must not be printed on any resume (it used to be printed on every one, hiding the real data loss of world-model
SFT, whose checkpoints store the base in Qwen2.5-VL's release key layout).
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from safetensors import safe_open

from trl_latent.data.pretrain import load_pretrain_corpus
from trl_latent.experiments.models import tiny_vlm, tiny_vlm_path
from trl_latent.experiments.task import synthetic_rl_dataset, synthetic_sft_dataset, write_synthetic_task
from trl_latent.modeling import LatentActionModel
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


def sft_run(env, out, stage, lora=False, resume=None):
    from peft import LoraConfig

    model = copy.deepcopy(env["initial"])
    args = LatentSFTConfig(
        str(out),
        stage=stage,
        max_steps=STEPS,
        save_strategy="steps",
        save_steps=SAVE_AT,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        report_to="none",
        disable_tqdm=True,
        seed=0,
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


# --------------------------------------------------------------------------------------------------- latent RL
def grpo_run(env, out, resume=None):
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
