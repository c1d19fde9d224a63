"""The model card a latent trainer writes beside its saved model says what the model is, and its quick start runs.

Each test trains a tiny latent model for a step or two (CPU, seconds), saves it as the recipes do (a checkpoint save
writes TRL's card into `output_dir`, `trainer.save_model()` the model and its processor), reads the card and checks:
the base model is named, the stage or RL objective is stated, the latent-action paper, CoLA and the objective's paper
are cited, the trl-latent version is listed, and no `pipeline("text-generation")` quick start is shown. Then the
card's python quick start is executed with the folder substituted: it must load the trained model (compared weight by
weight with the trainer's) and decode text with latent actions.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
import trl
from datasets import Dataset
from huggingface_hub import ModelCard

import trl_latent
from tests.fixtures.models import tiny_lm, tiny_lm_path, tiny_vlm, tiny_vlm_path
from trl_latent.experiments.shapes.reward import rubric_reward
from trl_latent.experiments.shapes.task_data import synthetic_rl_dataset, synthetic_sft_dataset
from trl_latent.modeling import LatentActionModel
from trl_latent.training.latent_grpo_config import LatentGRPOConfig
from trl_latent.training.latent_grpo_trainer import POLICY_LORA_TARGET_MODULES, LatentGRPOTrainer
from trl_latent.training.latent_sft_config import LatentSFTConfig
from trl_latent.training.latent_sft_trainer import LatentSFTTrainer
from trl_latent.training.losses import LOSS_CLASSES, get_loss
from trl_latent.training.model_card import rl_training

LATENT_PAPER = "2601.07516"
COLA = "2503.21383"
# The paper of each objective, by loss name (written out here, independently of the card module's table).
OBJECTIVE_ARXIV = {"grpo": "2402.03300", "dr_grpo": "2503.20783", "dapo": "2503.14476", "bnpo": "2506.02864"}


@pytest.fixture(scope="module")
def vlm_path(tiny_cache):
    return tiny_vlm_path("tiny", cache_dir=tiny_cache)


@pytest.fixture(scope="module")
def vlm_processor(tiny_cache):
    return tiny_vlm("tiny", cache_dir=tiny_cache)[1]


def grpo_args(output_dir, loss: str, **overrides) -> LatentGRPOConfig:
    kwargs = dict(
        loss=loss,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=4,
        max_steps=1,
        learning_rate=1e-2,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_only_model=True,  # the end-of-training checkpoint save writes the card
        disable_tqdm=True,
        seed=0,
    )
    kwargs.update(overrides)
    return LatentGRPOConfig(str(output_dir), **kwargs)


def read_card(folder: Path) -> str:
    path = folder / "README.md"
    assert path.is_file(), f"no model card in {folder}: {sorted(p.name for p in folder.iterdir())}"
    return path.read_text()


def assert_card_names_the_model(text: str, base_path: str, objective: str | None = None) -> None:
    assert "[None]" not in text and "huggingface.co/None" not in text
    assert f"`{base_path}`" in text  # the base (a local folder here) is named
    assert LATENT_PAPER in text and COLA in text
    assert "Controlling Multimodal Conversational Agents with Coverage-Enhanced Latent Actions" in text
    for name, arxiv_id in OBJECTIVE_ARXIV.items():  # the run's objective's paper, and no other objective's
        assert (arxiv_id in text) == (name == objective), (name, objective)
    assert f"- trl-latent: {trl_latent.__version__}" in text
    assert f"- TRL: {trl.__version__}" in text
    assert "pipeline(" not in text and "text-generation" not in text


def quick_start(text: str) -> str:
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, section
    return blocks[0]


def substitute(code: str, variable: str, shown: str, actual: Path) -> str:
    line = f'{variable} = "{shown}"'
    assert line in code, f"{line!r} not in the quick start:\n{code}"
    return code.replace(line, f"{variable} = {str(actual)!r}")


def run_quick_start(code: str, capsys) -> dict:
    """Execute the quick start; check it printed the decoded text and the latent actions it chose."""
    namespace: dict = {"__name__": "__quick_start__"}
    exec(compile(code, "<model card quick start>", "exec"), namespace)
    out, tokenizer = namespace["out"], namespace["tokenizer"]
    assert isinstance(namespace["model"], LatentActionModel)
    assert out.codes.shape == out.completion_ids.shape and out.codes.shape[1] >= 1
    assert out.codes.max() < namespace["model"].config.codebook_size
    decoded = tokenizer.batch_decode(out.completion_ids, skip_special_tokens=True)[0]
    assert capsys.readouterr().out.endswith(f"{decoded}\nlatent actions: {out.codes[0].tolist()}\n")
    return namespace


def assert_same_weights(loaded: torch.nn.Module, trained: torch.nn.Module, prefix: str) -> None:
    theirs = {k: v for k, v in trained.state_dict().items() if k.startswith(prefix)}
    ours = loaded.state_dict()
    assert theirs
    for name, value in theirs.items():
        torch.testing.assert_close(ours[name], value, rtol=0, atol=1e-6, msg=name)


# ------------------------------------------------------------------------------------------------------------- RL
@pytest.mark.parametrize("base", ["vlm", "text-only"])
def test_latent_grpo_card(base, vlm_path, vlm_processor, tiny_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the run's output_dir is relative, as in a recipe
    if base == "vlm":
        base_path, processing_class, loss = vlm_path, vlm_processor, "dr_grpo"
        dataset = synthetic_rl_dataset(4, seed=0)
    else:
        base_path, loss = tiny_lm_path("tiny", cache_dir=tiny_cache), "bnpo"
        processing_class = tiny_lm("tiny", cache_dir=tiny_cache)[1]
        prompt = [{"role": "user", "content": "Which colour is the circle?"}]
        dataset = Dataset.from_dict({"prompt": [prompt] * 4, "reference": ["The circle is red."] * 4})
    torch.manual_seed(0)
    model = LatentActionModel.from_base(base_path, codebook_size=16, inverse_layers=1, policy_layers=1)
    trainer = LatentGRPOTrainer(
        model,
        reward_funcs=rubric_reward,
        args=grpo_args("latent-grpo", loss),
        train_dataset=dataset,
        processing_class=processing_class,
    )
    trainer.train()
    trainer.save_model()

    text = read_card(tmp_path / "latent-grpo")
    assert_card_names_the_model(text, base_path, objective=loss)
    assert f'`loss="{loss}"`' in text and "latent-action RL" in text
    data = ModelCard.load(tmp_path / "latent-grpo" / "README.md").data
    assert {"trl-latent", "latent-grpo"} <= set(data.tags) and data.library_name == "trl-latent"
    assert data.base_model is None  # a local folder is no Hub id (TRL's rule)

    code = substitute(quick_start(text), "folder", "latent-grpo", tmp_path / "latent-grpo")
    monkeypatch.chdir(tmp_path.parent)  # the quick start finds the model by the substituted path alone
    namespace = run_quick_start(code, capsys)
    assert_same_weights(namespace["model"], trainer.model, "policy.")  # the trained policy, not a fresh one


def test_latent_grpo_card_with_lora_on_the_policy(vlm_path, vlm_processor, tmp_path, capsys):
    torch.manual_seed(0)
    start = tmp_path / "stage5"
    LatentActionModel.from_base(vlm_path, codebook_size=16, inverse_layers=1, policy_layers=1).save_pretrained(start)
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=POLICY_LORA_TARGET_MODULES)
    output_dir = tmp_path / "latent-grpo-lora"
    trainer = LatentGRPOTrainer(
        str(start),
        reward_funcs=rubric_reward,
        args=grpo_args(output_dir, "grpo"),
        train_dataset=synthetic_rl_dataset(4, seed=0),
        processing_class=vlm_processor,
        peft_config=lora,
    )
    trainer.train()
    trainer.save_model()

    text = read_card(output_dir)
    assert_card_names_the_model(text, vlm_path, objective="grpo")
    assert "PeftModel.from_pretrained" in text
    code = quick_start(text)
    code = substitute(code, "folder", str(output_dir), output_dir)
    code = substitute(code, "start", str(start), start)  # the run started from a saved model: the card names it
    namespace = run_quick_start(code, capsys)
    merged = copy.deepcopy(trainer.model).merge_and_unload()
    assert_same_weights(namespace["model"], merged, "policy.")


@pytest.mark.parametrize("loss", sorted(LOSS_CLASSES))
def test_rl_card_cites_the_objective_of_the_loss_object(loss):
    args = LatentGRPOConfig("unused", use_cpu=True, per_device_train_batch_size=8, code_top_k=8)
    training = rl_training(get_loss(loss), args)
    assert [paper.arxiv_id for paper in training.papers] == [OBJECTIVE_ARXIV[loss]]
    assert f'loss="{loss}"' in training.summary
    assert training.decoding["code_top_k"] == 8 and training.decoding["do_sample_codes"]


# ------------------------------------------------------------------------------------------------------------ SFT
def test_world_sft_card(vlm_path, tmp_path, capsys):
    from transformers import AutoProcessor

    torch.manual_seed(0)
    model = LatentActionModel.from_base(vlm_path, codebook_size=16, inverse_layers=1, policy_layers=1)
    output_dir = tmp_path / "world_sft"
    args = LatentSFTConfig(
        str(output_dir),
        stage="world_sft",
        assistant_only_loss=True,
        world_sft_last_layers=1,
        max_steps=2,
        learning_rate=1e-2,
        per_device_train_batch_size=4,
        health_samples=0,
        save_only_model=True,
        use_cpu=True,
        bf16=False,
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    trainer = LatentSFTTrainer(
        model,
        args,
        train_dataset=synthetic_sft_dataset(8, seed=0),
        processing_class=AutoProcessor.from_pretrained(vlm_path),
    )
    trainer.train()
    trainer.save_model()

    text = read_card(output_dir)
    assert_card_names_the_model(text, vlm_path, objective=None)
    assert "latent SFT stage `world_sft`" in text and "stage 5" in text
    assert {"trl-latent", "latent-sft"} <= set(ModelCard.load(output_dir / "README.md").data.tags)

    code = substitute(quick_start(text), "folder", str(output_dir), output_dir)
    namespace = run_quick_start(code, capsys)
    # Stage 5 trains the base's last layer: the quick start loads the trained base saved with the model.
    assert_same_weights(namespace["model"], trainer.model, "base.")
