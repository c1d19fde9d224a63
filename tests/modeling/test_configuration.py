"""`modeling.configuration`: `LatentActionConfig` refuses a value no model can be built with, naming the field, and
round-trips through `save_pretrained`; the world-model output forms it offers (`WORLD_OUTPUTS`), their per-stage
schedule, and what the health metrics say each form can do."""

import pytest
import torch

from trl_latent.experiments.shapes.task_data import synthetic_rl_dataset, synthetic_sft_dataset
from trl_latent.metrics.latent_health import HEALTH_METRICS, latent_health
from trl_latent.modeling import LatentActionModel
from trl_latent.modeling.configuration import WORLD_MERGE_INITS, WORLD_OUTPUTS, LatentActionConfig
from trl_latent.training.latent_sft_config import LatentSFTConfig
from trl_latent.training.latent_sft_trainer import LatentSFTTrainer
from trl_latent.training.stages import STAGES, WORLD_OUTPUT_SCHEDULES, resolve_stage

REFUSED = [
    ("codebook_size", 1, "codebook_size must be at least 2 (got 1): one code is no choice at all."),
    ("inverse_layers", 0, "inverse_layers must be at least 1 (got 0)."),
    ("policy_layers", 0, "policy_layers must be at least 1 (got 0)."),
    ("merge_blocks", 0, "merge_blocks must be at least 1 (got 0)."),
    ("world_output", "lm_head", f"world_output must be one of {WORLD_OUTPUTS} (got 'lm_head')."),
    ("world_merge_init", "ones", f"world_merge_init must be one of {WORLD_MERGE_INITS} (got 'ones')."),
    ("projector_hidden_ratio", 5, "projector_hidden_ratio must be in (0, 4] (got 5)."),
    ("projector_logvar_bound", 0.0, "projector_logvar_bound must be positive (got 0.0)."),
    ("world_delta_scale", -1.0, "world_delta_scale must be positive (got -1.0)."),
    ("gumbel_temperature", 0.0, "gumbel_temperature must be positive (got 0.0)."),
]


@pytest.mark.parametrize("field, value, message", REFUSED, ids=[field for field, _, _ in REFUSED])
def test_a_value_no_model_can_be_built_with_is_refused_naming_the_field(field, value, message):
    with pytest.raises(ValueError) as info:
        LatentActionConfig(**{field: value})
    assert str(info.value) == message


def test_a_config_round_trips_through_save_pretrained(tmp_path):
    config = LatentActionConfig(
        codebook_size=16, inverse_layers=1, policy_layers=2, world_output="residual", world_merge_init="zeros"
    )
    config.save_pretrained(tmp_path)
    again = LatentActionConfig.from_pretrained(tmp_path)
    assert again.model_type == "latent_action"
    for name in ("codebook_size", "inverse_layers", "policy_layers", "world_output", "world_merge_init"):
        assert getattr(again, name) == getattr(config, name), name


# ---------------------------------------------------------------------------- world-model output forms
# World-model output forms, the per-stage schedule, and the latent-space health metrics.
#
# A tiny VLM is first pretrained with stock TRL SFT on the task's dialogues, so the base alone predicts most answer
# tokens (the situation in which the minus-base form fails, docs/architecture.md section 2). Stage 1 then runs under each form
# and the health metrics say which forms can reach the answers and whether the codes steer.

CODES = 16


def sft_args(out, stage, steps, **kwargs):
    kwargs.setdefault("learning_rate", 1e-2)
    return LatentSFTConfig(
        str(out),
        stage=stage,
        max_steps=steps,
        per_device_train_batch_size=8,
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        report_to="none",
        seed=0,
        **kwargs,
    )


@pytest.fixture(scope="module")
def env(tiny_cache, tmp_path_factory):
    """A tiny VLM pretrained on role-play dialogues (the stand-in for an instruct VLM) and held-out dialogues."""
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    from tests.fixtures.models import tiny_vlm_path

    path = tiny_vlm_path("tiny", cache_dir=tiny_cache)
    processor = AutoProcessor.from_pretrained(path)
    base = AutoModelForImageTextToText.from_pretrained(path)
    out = tmp_path_factory.mktemp("pretrained_base")
    args = SFTConfig(
        str(out / "run"),
        max_steps=60,
        per_device_train_batch_size=16,
        learning_rate=3e-3,
        assistant_only_loss=True,
        max_length=None,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        seed=0,
    )
    SFTTrainer(
        model=base, args=args, train_dataset=synthetic_sft_dataset(256, seed=1), processing_class=processor
    ).train()
    base.save_pretrained(out / "base")
    processor.save_pretrained(out / "base")
    return {
        "path": out / "base",
        "processor": processor,
        "dialogues": synthetic_sft_dataset(96, seed=2),
        "held_out": synthetic_sft_dataset(24, seed=3, split="eval"),
    }


def fresh_model(env, **config):
    torch.manual_seed(0)
    return LatentActionModel.from_base(
        str(env["path"]), codebook_size=CODES, inverse_layers=1, policy_layers=1, **config
    )


def run_stage(env, out, stage, model, steps, **kwargs):
    trainer = LatentSFTTrainer(
        model,
        sft_args(out, stage, steps, health_samples=24, **kwargs),
        train_dataset=env["dialogues"],
        processing_class=env["processor"],
        health_dataset=env["held_out"],
    )
    trainer.train()
    return trainer


# ------------------------------------------------------------------------------------------------ the schedule
def test_authors_schedule_is_the_stage_table_column():
    assert WORLD_OUTPUT_SCHEDULES["minus_base_then_merge_delta"] == {
        "inverse_warmup": "residual_minus_base",
        "joint": "residual_minus_base",
        "world_sft": "merge_delta",
    }
    assert STAGES["policy_bc"].world_output is None and STAGES["projector_warmup"].world_output is None
    for form in WORLD_OUTPUTS:
        assert set(WORLD_OUTPUT_SCHEDULES[form].values()) == {form}


def test_default_schedule_is_the_authors():
    """The library trains under the paper's schedule unless a config says otherwise; a fresh model's form is the one
    RL and inference use (merge-delta)."""
    for stage in STAGES:
        plan = resolve_stage(sft_args("unused", stage, 1))
        assert plan.world_output == WORLD_OUTPUT_SCHEDULES["minus_base_then_merge_delta"].get(stage)
    assert resolve_stage(sft_args("unused", "inverse_warmup", 1)).world_output == "residual_minus_base"
    assert LatentActionModel.config_class().world_output == "merge_delta"


@pytest.mark.parametrize("stage", list(STAGES))
def test_resolved_form(stage):
    plan = resolve_stage(sft_args("unused", stage, 1, world_output_schedule="minus_base_then_merge_delta"))
    assert plan.world_output == WORLD_OUTPUT_SCHEDULES["minus_base_then_merge_delta"].get(stage)
    plan = resolve_stage(sft_args("unused", stage, 1, world_output="residual"))
    assert plan.world_output == (None if STAGES[stage].world_output is None else "residual")


def test_base_plus_delta_is_the_base_logits_plus_a_scaled_code_expert():
    from trl_latent.modeling.model import world_hidden

    torch.manual_seed(0)
    norm = torch.nn.RMSNorm(8)
    e, x, delta = torch.randn(3, 2, 5, 8).unbind(0)
    head = torch.nn.Linear(8, 11, bias=False)
    for scale in (1.0, 3.0):
        logits = head(world_hidden("base_plus_delta", e, x, delta, norm, scale))
        torch.testing.assert_close(logits, head(e) + scale * head(world_hidden("merge_delta", e, x, delta, norm)))
    with pytest.raises(ValueError, match="world_delta_scale must be positive"):
        LatentActionModel.config_class(world_delta_scale=0.0)


def test_hybrid_schedule_switches_to_base_plus_delta_at_stage_five():
    schedule = WORLD_OUTPUT_SCHEDULES["merge_delta_then_base_plus_delta"]
    assert schedule == {"inverse_warmup": "merge_delta", "joint": "merge_delta", "world_sft": "base_plus_delta"}


def test_unknown_schedule_or_form_is_refused():
    with pytest.raises(ValueError, match="world_output_schedule must be one of"):
        sft_args("unused", "inverse_warmup", 1, world_output_schedule="mine")
    with pytest.raises(ValueError, match="world_output must be one of"):
        sft_args("unused", "inverse_warmup", 1, world_output="lm_head")
    with pytest.raises(ValueError, match="world_output must be one of"):
        LatentActionModel.config_class(world_output="lm_head")


# ------------------------------------------------------------------------------------------------ health metrics
def test_health_metrics_of_an_identity_world_model(env):
    """With the merge blocks zeroed, `lm_head(x_K)` is the base's own prediction: the world model's accuracy equals the
    base's whatever the codes, and no code changes any token."""
    from transformers.trainer_utils import set_seed

    set_seed(0)
    model = fresh_model(env, world_output="residual")
    for block in model.world_merge.blocks:
        torch.nn.init.zeros_(block.down_proj.weight)
    trainer = LatentSFTTrainer(
        model,
        sft_args("unused", "policy_bc", 1, use_text_only=False),
        train_dataset=env["dialogues"],
        processing_class=env["processor"],
    )
    health = trainer.measure_health(env["held_out"], num_samples=16)
    assert set(health) == set(HEALTH_METRICS)
    base = health["health/base_accuracy"]
    assert base > 0.5  # the pretrained base knows most answer tokens
    for key in ("world_accuracy_inverse", "world_accuracy_policy", "world_accuracy_best"):
        assert health[f"health/{key}"] == pytest.approx(base)
    assert health["health/controllability"] == 1.0
    assert 0 < health["health/policy_entropy"] <= torch.log(torch.tensor(float(CODES))) + 1e-4
    assert 1 <= health["health/codes_used_policy"] <= CODES


def test_health_is_empty_without_answer_tokens(env):
    model = fresh_model(env)
    batch = {"input_ids": torch.ones(1, 4, dtype=torch.long), "attention_mask": torch.ones(1, 4)}
    batch["loss_mask"] = torch.zeros(1, 4, dtype=torch.bool)
    assert latent_health(model, [batch]) == {}


# ------------------------------------------------------------------------------------------------ stage 1 per form
@pytest.fixture(scope="module")
def stage_one(env, tmp_path_factory):
    """Stage 1 under each output form, from the same pretrained base and initialisation."""
    out = tmp_path_factory.mktemp("stage_one")
    results = {}
    for form in WORLD_OUTPUTS:
        trainer = run_stage(env, out / form, "inverse_warmup", fresh_model(env), 40, world_output=form)
        results[form] = {"health": trainer.health, "form": trainer.model.config.world_output, "out": out / form}
        trainer.save_model(str(out / form))
        results[form]["logged"] = [h for h in trainer.state.log_history if "health/world_accuracy_best" in h]
    return results


def test_stage_one_logs_health_once_in_its_form(stage_one):
    for form, result in stage_one.items():
        assert result["form"] == form
        assert len(result["logged"]) == 1 and set(HEALTH_METRICS) <= set(result["logged"][0])


def test_minus_base_cannot_say_what_the_base_is_sure_of(stage_one):
    """The measured failure of `lm_head(norm(x_K) - e)` (docs/architecture.md section 2): it almost never emits the answer
    token the frozen base is confident about, with the IDM's codes or with the best of all codes."""
    health = stage_one["residual_minus_base"]["health"]
    assert health["health/base_accuracy"] > 0.5
    assert health["health/world_accuracy_inverse"] < 0.25, health
    assert health["health/world_accuracy_best"] < health["health/base_accuracy"] - 0.3, health


@pytest.mark.parametrize("form", ["residual_norm", "residual", "merge_delta", "base_plus_delta"])
def test_residual_forms_reach_the_answers(stage_one, form):
    """Forms that start from the base's prediction learn, in stage 1, to predict the answer tokens with the IDM's codes
    far above minus-base, and some code reaches most answer tokens (measured with four answer patterns per character,
    40 steps: best-code accuracy 0.73 residual_norm, 0.79 residual, 0.66 merge_delta, 0.75 base_plus_delta; above 0.8
    for all four when each character had one answer)."""
    health = stage_one[form]["health"]
    minus_base = stage_one["residual_minus_base"]["health"]
    assert health["health/world_accuracy_inverse"] > minus_base["health/world_accuracy_inverse"] + 0.4, health
    assert health["health/world_accuracy_best"] >= health["health/world_accuracy_inverse"]
    assert health["health/world_accuracy_best"] > 0.6, health


def test_codes_steer_under_the_residual_forms(stage_one):
    """Controllability: under `lm_head(norm(x_K))` the codes change the world model's next token at answer positions
    (measured: 1.41 distinct tokens per position across 16 codes after 40 steps)."""
    assert stage_one["residual_norm"]["health"]["health/controllability"] > 1.2, stage_one["residual_norm"]["health"]


# ------------------------------------------------------------------------------------------------ behaviour cloning
def test_soft_behaviour_cloning_leaves_room_to_explore(env, stage_one, tmp_path):
    """Cloning the IDM's whole code distribution keeps the policy's code entropy well above argmax cloning's, while
    its argmax still agrees with the IDM far above chance."""
    results = {}
    for target in ("argmax", "soft"):
        model = LatentActionModel.from_pretrained(str(stage_one["residual_norm"]["out"]))
        trainer = run_stage(
            env, tmp_path / target, "policy_bc", model, 30, use_text_only=False, bc_target=target, learning_rate=3e-3
        )
        last = [h for h in trainer.state.log_history if "policy/bc_accuracy" in h][-1]
        results[target] = {"entropy": trainer.health["health/policy_entropy"], "accuracy": last["policy/bc_accuracy"]}
    assert results["soft"]["entropy"] > results["argmax"]["entropy"] + 0.3, results
    assert min(r["accuracy"] for r in results.values()) > 4 / CODES, results


def test_bc_entropy_bonus_is_an_opt_in_loss_term():
    assert "policy/entropy" not in resolve_stage(sft_args("unused", "policy_bc", 1)).weights
    plan = resolve_stage(sft_args("unused", "policy_bc", 1, bc_entropy_weight=0.1))
    assert plan.weights["policy/entropy"] == pytest.approx(-0.1)


# ------------------------------------------------------------------------------------------------ the form travels
def test_stage_five_form_is_what_the_reloaded_model_uses_in_rl_and_evaluation(env, tmp_path, recorded_forms):
    """The form stage 5 trained under is saved in the model's config; a reloaded model uses it when LatentGRPOTrainer
    rolls out and when the evaluation decodes, and a different form would decode differently."""
    from trl_latent.evaluation import generate_answers
    from trl_latent.experiments.shapes.reward import task_reward
    from trl_latent.training.latent_grpo_config import LatentGRPOConfig
    from trl_latent.training.latent_grpo_trainer import LatentGRPOTrainer

    model = fresh_model(env)
    # At lr 1e-3 the stage-5 model still answers (at this test's usual 1e-2 every form collapses to "<|im_end|>").
    run_stage(
        env,
        tmp_path / "s1",
        "inverse_warmup",
        model,
        10,
        world_output_schedule="minus_base_then_merge_delta",
        learning_rate=1e-3,
    )
    assert model.config.world_output == "residual_minus_base"
    trainer = run_stage(
        env,
        tmp_path / "s5",
        "world_sft",
        model,
        10,
        world_output_schedule="minus_base_then_merge_delta",
        learning_rate=1e-3,
    )
    assert trainer.model.config.world_output == "merge_delta"
    trainer.save_model(str(tmp_path / "saved"))

    reloaded = LatentActionModel.from_pretrained(str(tmp_path / "saved"))
    assert reloaded.config.world_output == "merge_delta"
    prompts = synthetic_rl_dataset(8, seed=4, split="eval")
    recorded_forms.clear()
    answers = generate_answers(reloaded, env["processor"], prompts, max_new_tokens=12)
    assert recorded_forms and set(recorded_forms) == {"merge_delta"}  # evaluation decodes with the saved form
    assert answers == generate_answers(trainer.model.eval(), env["processor"], prompts, max_new_tokens=12)

    # It says something, and not one thing for every prompt (measured: 8 of 8 answers non-empty, two distinct:
    # "O..........." and "Brave.........."; a collapsed model says "" or one answer to all). An answer runs to the
    # end-of-turn token or to the 12-token limit, so none is cut after its first token (measured: 12 tokens each).
    assert all(answers) and len(set(answers)) >= 2, answers
    lengths = [len(env["processor"].tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers]
    assert sum(lengths) / len(lengths) > 2.0 and max(lengths) <= 12, (lengths, answers)

    # The form decides what the world model says. On the same states and codes the reloaded model's logits are the
    # stage-5 model's, and every other form gives other logits, other greedy tokens and other answers (measured: the
    # greedy token differs at 73-97% of the prompt positions, the largest logit by 4.7-6.0).
    processor = env["processor"]
    texts = [processor.apply_chat_template(p, add_generation_prompt=True) for p in prompts["prompt"]]
    batch = processor(text=texts, images=list(prompts["image"]), return_tensors="pt", padding=True)
    positions = batch["attention_mask"].bool()
    with torch.no_grad():
        base = reloaded.encode(**batch)
        codes = reloaded.policy_logits(base.states, base).argmax(-1)
        logits = reloaded.world_logits(base.states, codes)
        torch.testing.assert_close(logits, trainer.model.world_logits(base.states, codes), rtol=0, atol=0)
    for form in sorted(set(WORLD_OUTPUTS) - {"merge_delta"}):
        reloaded.config.world_output = form
        with torch.no_grad():
            other = reloaded.world_logits(base.states, codes)
        assert (other - logits).abs().max() > 1.0, form
        assert (other.argmax(-1) != logits.argmax(-1))[positions].float().mean() > 0.5, form
        recorded_forms.clear()
        other_answers = generate_answers(reloaded, processor, prompts, max_new_tokens=12)
        assert set(recorded_forms) == {form} and other_answers != answers, form
    reloaded.config.world_output = "merge_delta"

    args = LatentGRPOConfig(
        str(tmp_path / "grpo"),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=12,
        max_steps=1,
        logging_steps=1,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        code_top_k=1,  # the policy's argmax: rollouts are the greedy answers
    )
    grpo = LatentGRPOTrainer(
        str(tmp_path / "saved"),
        reward_funcs=task_reward,
        args=args,
        train_dataset=prompts,
        processing_class=env["processor"],
    )
    assert grpo.model.config.world_output == "merge_delta"
    recorded_forms.clear()
    grpo.train()
    assert recorded_forms and set(recorded_forms) == {"merge_delta"}  # rollouts and the update use the saved form


@pytest.fixture
def recorded_forms(monkeypatch) -> list[str]:
    """The world-output form of every world-model call while the test runs."""
    from trl_latent.modeling import model as modeling

    seen: list[str] = []
    original = modeling.world_hidden

    def recording(form, *args):
        seen.append(form)
        return original(form, *args)

    monkeypatch.setattr(modeling, "world_hidden", recording)
    return seen
