"""`trl-latent plan`: counts and memory checked against a hand computation for the real Qwen2.5-VL-3B/7B shapes.

The hand computation below is written out from the released `config.json` files and the per-layer parameter
formulae of Qwen2.5-VL, independently of the planner (which builds the model on the `meta` device and counts). The
trainable sets are checked against what `LatentSFTTrainer` / `LatentGRPOTrainer` actually train on the tiny model, and
the activation formula against the tensors autograd saves for a decoder layer.
"""

from __future__ import annotations

import re

import pytest

from trl_latent.planning.counting import PlanError, resolve_plan_stage
from trl_latent.planning.memory import GIB
from trl_latent.planning.plan import format_plan, make_plan

# From the released config.json of Qwen/Qwen2.5-VL-{3B,7B}-Instruct.
TEXT = {
    "3b": dict(V=151936, h=2048, i=11008, L=36, heads=16, kv_heads=2, tied=True),
    "7b": dict(V=152064, h=3584, i=18944, L=28, heads=28, kv_heads=4, tied=False),
}


VISION = dict(hv=1280, iv=3420, depth=32, patch=14, temporal=2, merge=2)


# Published sizes of the base models (model cards): 3.75B and 8.29B parameters.
PUBLISHED = {"3b": 3.75e9, "7b": 8.29e9}


IDS = {"3b": "Qwen/Qwen2.5-VL-3B-Instruct", "7b": "Qwen/Qwen2.5-VL-7B-Instruct"}


# ------------------------------------------------------------------------------------------- hand computation
def decoder_layer(h, i, heads, kv_heads):
    kv = kv_heads * (h // heads)
    attention = (h * h + h) + 2 * (h * kv + kv) + h * h  # q, k, v with bias; o without
    mlp = 3 * h * i  # gate, up, down without bias
    return attention + mlp + 2 * h  # two RMSNorms


def vision_tower(out_hidden):
    hv, iv = VISION["hv"], VISION["iv"]
    patch_embed = 3 * VISION["temporal"] * VISION["patch"] ** 2 * hv  # Conv3d without bias
    block = 2 * hv + (hv * 3 * hv + 3 * hv) + (hv * hv + hv) + 2 * (hv * iv + iv) + (iv * hv + hv)
    m = hv * VISION["merge"] ** 2
    merger = hv + (m * m + m) + (m * out_hidden + out_hidden)  # ln_q, then Linear-GELU-Linear
    return patch_embed + VISION["depth"] * block + merger


def hand_counts(size, codes=128, inverse_layers=4, policy_layers=8, merge_blocks=2):
    t = TEXT[size]
    h, i, V = t["h"], t["i"], t["V"]
    layer = decoder_layer(h, i, t["heads"], t["kv_heads"])
    stack = lambda n: n * layer + h + h * codes  # noqa: E731  layers, final RMSNorm, head d -> |C|
    p_hidden = h // 2
    projector = 2 * ((h * p_hidden + p_hidden) + (p_hidden * h + h))  # separate mean and log-variance MLPs
    return {
        "vision": vision_tower(h),
        "embeddings": V * h,
        "layers": t["L"] * layer,
        "layer": layer,
        "norm": h,
        "lm_head": 0 if t["tied"] else V * h,
        "codebook": codes * h,
        "inverse": stack(inverse_layers),
        "merge": merge_blocks * (2 * (2 * h) * i + i * h),
        "policy": stack(policy_layers),
        "projector": projector,
    }


def hand_trainable(size, stage):
    c = hand_counts(size)
    base_tail = c["vision"] + 8 * c["layer"] + c["norm"] + c["embeddings"]  # tied lm_head: the embeddings
    return {
        "inverse_warmup": c["inverse"] + c["codebook"] + c["merge"],
        "projector_warmup": 2 * c["projector"],
        "joint": c["inverse"] + c["codebook"] + c["merge"] + 2 * c["projector"],
        "policy_bc": c["policy"],
        "world_sft": base_tail,
        "grpo": c["policy"],
    }[stage]


def by_name(plan):
    return {re.sub(r" \(.*\)$", "", m.name): m for m in plan.modules}


# ------------------------------------------------------------------------------------------------- counts
@pytest.mark.parametrize("size", ["3b", "7b"])
def test_parameter_counts_match_the_hand_computation(size):
    plan = make_plan(IDS[size], "1")
    modules, c = by_name(plan), hand_counts(size)
    expected = {
        "base / vision tower": c["vision"],
        "base / embeddings": c["embeddings"],
        "base / LM layers": c["layers"],
        "base / final norm": c["norm"],
        "base / lm_head": c["lm_head"],
        "codebook": c["codebook"],
        "inverse dynamics": c["inverse"],
        "world-model merge": c["merge"],
        "policy": c["policy"],
        "projector P": c["projector"],
        "inverse projector P'": c["projector"],
    }
    assert {name: m.params for name, m in modules.items()} == expected
    base = sum(v for k, v in expected.items() if k.startswith("base"))
    assert round(base / 1e9, 2) == PUBLISHED[size] / 1e9
    assert plan.total_params == sum(expected.values())
    assert ("tied to the embeddings" in modules["base / lm_head"].note) == TEXT[size]["tied"]


@pytest.mark.parametrize("size", ["3b", "7b"])
@pytest.mark.parametrize("stage", ["1", "2", "3", "4", "5", "grpo"])
def test_trainable_parameters_per_stage(size, stage):
    plan = make_plan(IDS[size], stage)
    assert plan.trainable_params == hand_trainable(size, resolve_plan_stage(stage))


def test_memory_per_strategy_follows_the_stated_accounting():
    size, n = "7b", 8
    plan = make_plan(IDS[size], "world_sft", num_gpus=n, gpu_memory_gib=80, zero="zero3")
    total, trainable = plan.total_params, hand_trainable(size, "world_sft")
    largest = TEXT[size]["V"] * TEXT[size]["h"]  # the embedding matrix (and the untied lm_head)
    assert plan.largest_module_params == largest
    # Stage 5 trains the embeddings, so the largest trainable module is the largest module.
    assert plan.largest_trainable_module_params == largest
    ddp, zero2, zero3, offload = (plan.memory(s) for s in ("ddp", "zero2", "zero3", "zero3_offload"))
    assert (ddp.weights, ddp.gradients, ddp.optimizer) == (2 * total, 2 * trainable, 12 * trainable)
    # Every ZeRO stage: DeepSpeed's reduce bucket (5e8 gradient values) and the whole gradient of the largest trainable
    # module before its reduce-scatter, beside the gradient partition.
    zero_extra = 2 * (500_000_000 + largest)
    assert (zero2.weights, zero2.gradients, zero2.optimizer) == (
        2 * total,
        2 * trainable / n + zero_extra,
        12 * trainable / n,
    )
    assert zero3.weights == 2 * total / n + 2 * largest
    assert (zero3.gradients, zero3.optimizer) == (2 * trainable / n + zero_extra, 12 * trainable / n)
    assert (offload.weights, offload.gradients, offload.optimizer) == (2 * largest, zero_extra, 0)
    assert offload.cpu_per_process == (2 * total + 14 * trainable) / n
    assert all(m.reference == 0 for m in plan.strategies)  # world_sft keeps no reference policy
    # fp32: 4 + 4 + 8 bytes.
    fp32 = make_plan(IDS[size], "world_sft", num_gpus=n, precision="fp32").memory("ddp")
    assert (fp32.weights, fp32.gradients, fp32.optimizer) == (4 * total, 4 * trainable, 8 * trainable)


def test_rl_keeps_a_whole_reference_policy_on_every_gpu():
    plan = make_plan(IDS["3b"], "grpo", num_gpus=4)
    policy = hand_counts("3b")["policy"]
    assert {m.reference for m in plan.strategies} == {2 * policy}
    lora = make_plan(IDS["3b"], "grpo", num_gpus=4, lora_r=16)  # with PEFT the reference is the adapter disabled
    assert {m.reference for m in lora.strategies} == {0}


def test_lora_counts_r_times_in_plus_out_per_adapted_linear():
    t, r = TEXT["7b"], 16
    h, i, kv = t["h"], t["i"], t["kv_heads"] * (t["h"] // t["heads"])
    per_layer = r * ((h + h) + 2 * (h + kv) + (h + h) + 2 * (h + i) + (i + h))  # q, k, v, o, gate, up, down
    plan = make_plan(IDS["7b"], "world_sft", lora_r=r)
    assert plan.trainable_params == t["L"] * per_layer
    rl = make_plan(IDS["7b"], "grpo", lora_r=r)
    assert rl.trainable_params == 8 * per_layer  # POLICY_LORA_TARGET_MODULES: the 8 policy layers
    with pytest.raises(PlanError, match="world_sft.*grpo"):
        make_plan(IDS["7b"], "joint", lora_r=r)


def test_world_sft_activations_follow_the_formula():
    t, v = TEXT["3b"], VISION
    b, s, m = 2, 512, 100
    plan = make_plan(IDS["3b"], "5", batch_size=b, seq_len=s, image_tokens=m)
    h, kv = t["h"], t["kv_heads"] * (t["h"] // t["heads"])
    terms = plan.activation_terms
    assert terms["base LM layers"] == t["L"] * b * s * (8 * h + 2 * kv + 4 * t["i"]) * 2
    assert terms["vision tower"] == v["depth"] * b * m * 4 * (8 * v["hv"] + 2 * v["hv"] + 4 * v["iv"]) * 2
    assert terms["logits"] == b * s * t["V"] * (2 + 8)
    assert all(m.activations == sum(terms.values()) for m in plan.strategies)
    # LoRA on the LM layers: the vision tower no longer trains, so it keeps nothing for backward.
    assert "vision tower" not in make_plan(IDS["3b"], "5", lora_r=8).activation_terms


# --------------------------------------------------------------------------------- the same set the trainers train
@pytest.fixture(scope="module")
def saved_latent(tiny_cache, tmp_path_factory):
    from tests.fixtures.models import tiny_vlm_path
    from trl_latent.modeling import LatentActionModel

    model = LatentActionModel.from_base(
        tiny_vlm_path("tiny", cache_dir=tiny_cache), codebook_size=16, inverse_layers=1, policy_layers=1
    )
    folder = tmp_path_factory.mktemp("latent") / "model"
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("stage", ["inverse_warmup", "projector_warmup", "joint", "policy_bc", "world_sft", "grpo"])
def test_trainable_set_is_the_trainers(stage, saved_latent, tiny_cache, tmp_path):
    from transformers import AutoProcessor

    from trl_latent.experiments.shapes.task_data import synthetic_rl_dataset, synthetic_sft_dataset
    from trl_latent.modeling import LatentActionModel

    model = LatentActionModel.from_pretrained(saved_latent)
    processor = AutoProcessor.from_pretrained(model.config.base_model_name_or_path)
    common = dict(use_cpu=True, bf16=False, report_to="none", max_steps=1)
    if stage == "grpo":
        from trl_latent.training.latent_grpo_config import LatentGRPOConfig
        from trl_latent.training.latent_grpo_trainer import LatentGRPOTrainer

        args = LatentGRPOConfig(str(tmp_path), per_device_train_batch_size=2, num_generations=2, **common)
        trainer = LatentGRPOTrainer(
            model, reward_funcs=lambda completions, **kw: [0.0] * len(completions), args=args,
            train_dataset=synthetic_rl_dataset(4), processing_class=processor,
        )  # fmt: skip
    else:
        from trl_latent.training.latent_sft_config import LatentSFTConfig
        from trl_latent.training.latent_sft_trainer import LatentSFTTrainer

        text = synthetic_sft_dataset(4).map(lambda r: {"text": "a text-only record"}).select_columns(["text"])
        args = LatentSFTConfig(str(tmp_path), stage=stage, **common)
        trainer = LatentSFTTrainer(
            model, args, train_dataset=synthetic_sft_dataset(4), text_dataset=text, processing_class=processor
        )
    trained = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    plan = make_plan(saved_latent, stage)
    assert plan.trainable_params == trained > 0
    assert plan.total_params == sum(p.numel() for p in model.parameters())
    assert plan.source.endswith("config.json")


def test_a_config_file_and_unsupported_models(tmp_path):
    from trl_latent.modeling.real_shapes import real_shape_config

    path = tmp_path / "config.json"
    real_shape_config("3b").to_json_file(path)
    assert make_plan(path, "1").total_params == make_plan(IDS["3b"], "1").total_params
    path.write_text('{"model_type": "gpt2"}')
    with pytest.raises(PlanError, match="does not support base models of type 'gpt2'"):
        make_plan(path, "1")
    with pytest.raises(PlanError, match="Unknown ZeRO setting"):
        make_plan(IDS["3b"], "1", zero="4")


def test_format_plan_reads_as_a_table():
    text = format_plan(make_plan(IDS["3b"], "world_sft", num_gpus=2, gpu_memory_gib=80, zero="zero2"))
    assert "base / lm_head" in text and "tied to the embeddings" in text
    assert "ZeRO-2" in text and "<- chosen" in text and "GiB" in text
    assert GIB == 2**30
