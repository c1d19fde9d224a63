"""`trl-latent plan`: counts and memory checked against a hand computation for the real Qwen2.5-VL-3B/7B shapes.

The hand computation below is written out from the released `config.json` files and the per-layer parameter
formulae of Qwen2.5-VL, independently of the planner (which builds the model on the `meta` device and counts). The
trainable sets are checked against what `LatentSFTTrainer` / `LatentGRPOTrainer` actually train on the tiny model, and
the activation formula against the tensors autograd saves for a decoder layer.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from trl_latent import cli
from trl_latent.planning import (
    GIB,
    PlanError,
    format_plan,
    layer_values,
    make_plan,
    resolve_plan_stage,
)

ROOT = Path(__file__).resolve().parents[1]

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


# ------------------------------------------------------------------------------------------------- activations
@pytest.mark.parametrize("h, heads, kv_heads, i", [(64, 4, 2, 128), (128, 4, 2, 352), (96, 6, 1, 200)])
def test_layer_activation_formula_matches_what_autograd_saves(h, heads, kv_heads, i):
    from transformers import Qwen2Config
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer, Qwen2RotaryEmbedding

    config = Qwen2Config(
        hidden_size=h, intermediate_size=i, num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=8
    )
    config._attn_implementation = "sdpa"
    layer, rotary = Qwen2DecoderLayer(config, 0), Qwen2RotaryEmbedding(config)
    b, s = 2, 16
    x = torch.randn(b, s, h, requires_grad=True)
    position_ids = torch.arange(s).expand(b, s)
    position_embeddings = rotary(x, position_ids)
    weights = {p.untyped_storage().data_ptr() for p in layer.parameters()}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            saved[storage.data_ptr()] = storage.nbytes() // tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x, attention_mask=None, position_embeddings=position_embeddings, position_ids=position_ids)
    measured = sum(saved.values()) / (b * s)
    kv = kv_heads * (h // heads)
    # The formula leaves out per-token scalars and the rotary tables: within 5% at these tiny widths.
    assert abs(measured - layer_values(h, kv, i)) / measured < 0.05, (measured, layer_values(h, kv, i))


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
    from trl_latent.experiments.shapes.models import tiny_vlm_path
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


# ------------------------------------------------------------------------------------------------- bad input
def run_cli(capsys, *argv):
    code = cli.main(["plan", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_unknown_stage_is_a_clear_error(capsys):
    code, out, err = run_cli(capsys, IDS["3b"], "--stage", "stage7")
    assert code == 2 and out == ""
    assert "Unknown stage 'stage7'" in err and "5 (world_sft)" in err and "grpo" in err


def test_missing_model_path_is_a_clear_error(capsys, tmp_path):
    code, _, err = run_cli(capsys, str(tmp_path / "no-such-model"), "--stage", "1")
    assert code == 2 and "not found" in err and "no-such-model" in err and "config.json" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, str(tmp_path / "empty"), "--stage", "1")
    assert code == 2 and "holds no config.json" in err


def test_a_plan_that_does_not_fit_exits_nonzero_with_what_to_try(capsys):
    code, out, err = run_cli(
        capsys, IDS["7b"], "--stage", "5", "--zero", "ddp", "--num-gpus", "1", "--gpu-memory", "24"
    )
    assert code == 1
    assert err.strip() == "trl-latent plan: DDP does not fit 1 GPU(s) of 24 GiB. What to try is printed above."
    assert "ZeRO-3 fits on" in out and "--num-gpus" in out  # more GPUs with ZeRO-3
    assert "ZeRO-3 + CPU offload" in out and "LoRA" in out and "--lora-r 16" in out
    assert out.count("--lora-r 16") == 1  # the advice is printed once
    assert "DDP does not fit" in out  # the table is printed too


@pytest.mark.parametrize("flag", [["--codebook-size", "0"], ["--codebook-size", "-4"], ["--policy-layers", "-1"]])
def test_a_bad_latent_size_is_a_clear_error(capsys, flag):
    code, out, err = run_cli(capsys, IDS["3b"], "--stage", "grpo", *flag)
    assert code == 2 and out == "" and err.startswith("trl-latent plan: error: ") and len(err.splitlines()) == 1


def test_a_plan_that_fits_exits_zero(capsys):
    code, out, err = run_cli(capsys, IDS["3b"], "--stage", "grpo", "--zero", "3", "--num-gpus", "8")
    assert code == 0 and err == "" and "ZeRO-3 fits." in out


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


# ------------------------------------------------------------------------------------------------- docs
def test_docs_example_output_is_what_the_command_prints(capsys):
    doc = (ROOT / "docs" / "plan.md").read_text()
    examples = re.findall(r"```console\n\$ trl-latent (plan .*?)\n(.*?)```", doc, flags=re.S)
    assert examples, "docs/plan.md shows no `trl-latent plan` example"
    for command, shown in examples:
        code = cli.main(command.split())
        out, _ = capsys.readouterr()
        assert out == shown, f"docs/plan.md is out of date for `trl-latent {command}`:\n{out}"
        assert code in (0, 1)


def test_format_plan_reads_as_a_table():
    text = format_plan(make_plan(IDS["3b"], "world_sft", num_gpus=2, gpu_memory_gib=80, zero="zero2"))
    assert "base / lm_head" in text and "tied to the embeddings" in text
    assert "ZeRO-2" in text and "<- chosen" in text and "GiB" in text
    assert GIB == 2**30


# ----------------------------------------------------------------------------- counting and memory, one by one
def test_stage_and_strategy_names_resolve_and_bad_ones_name_the_choices():
    from trl_latent.planning.counting import PlanError, resolve_plan_stage
    from trl_latent.planning.memory import resolve_strategy

    assert [resolve_plan_stage(s) for s in ("1", "joint", "RL", "6", "grpo")] == [
        "inverse_warmup",
        "joint",
        "grpo",
        "grpo",
        "grpo",
    ]
    with pytest.raises(PlanError, match=r"Unknown stage '9'.*1 \(inverse_warmup\)"):
        resolve_plan_stage("9")
    assert [resolve_strategy(z) for z in (None, 0, "2", "zero-3", "zero3_offload")] == [
        None,
        "ddp",
        "zero2",
        "zero3",
        "zero3_offload",
    ]
    with pytest.raises(PlanError, match="Unknown ZeRO setting 1: choose one of ddp, zero2, zero3, zero3_offload"):
        resolve_strategy(1)


def test_counted_modules_add_up_to_the_meta_model():
    from trl_latent.planning.counting import build_meta_model, count_modules, load_model_config, set_stage_trainable
    from trl_latent.planning.memory import layer_values

    config, _ = load_model_config("Qwen/Qwen2.5-VL-3B-Instruct", codebook_size=16, inverse_layers=1, policy_layers=1)
    model = build_meta_model(config)
    set_stage_trainable(model, "policy_bc")
    counts = count_modules(model)
    assert sum(c.params for c in counts) == sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < trainable == sum(c.trainable for c in counts) < sum(c.params for c in counts) / 10
    assert layer_values(2048, 256, 11008) == 8 * 2048 + 2 * 256 + 4 * 11008
