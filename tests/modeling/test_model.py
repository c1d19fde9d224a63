"""The latent action model: shapes at real size, causality, gradients, cached decoding, save/load, bad input."""

import pytest
import torch
from transformers import AutoModel, AutoProcessor

from tests.fixtures.latent_models import SMALL
from tests.fixtures.latent_models import question_batch as _batch
from tests.fixtures.models import tiny_lm_path, tiny_vlm_path
from trl_latent.modeling.configuration import LatentActionConfig
from trl_latent.modeling.generation import latent_generate
from trl_latent.modeling.model import LatentActionModel
from trl_latent.modeling.real_shapes import real_shape_config


# ------------------------------------------------------------------------------------------------ real shapes
def _hand_count(cfg) -> dict:
    """Parameter count of a latent model on Qwen2.5-VL, computed by hand from the config (docs/architecture.md section 2)."""
    t, v = cfg.text_config, cfg.vision_config
    d, inter, n_layers = t.hidden_size, t.intermediate_size, t.num_hidden_layers
    heads, kv = t.num_attention_heads, t.num_key_value_heads
    hd = d // heads
    # Qwen2 decoder layer: q/k/v with biases, o_proj without, SwiGLU MLP, two RMSNorms.
    layer = (d * heads * hd + heads * hd) + 2 * (d * kv * hd + kv * hd) + heads * hd * d + 3 * d * inter + 2 * d
    embed = t.vocab_size * d
    lm_head = 0 if cfg.tie_word_embeddings else t.vocab_size * d
    text = embed + n_layers * layer + d + lm_head
    vd, vi, p = v.hidden_size, v.intermediate_size, v.patch_size
    patch = v.in_channels * v.temporal_patch_size * p * p * vd  # Conv3d, no bias
    block = 2 * vd + (vd * 3 * vd + 3 * vd) + (vd * vd + vd) + 2 * (vd * vi + vi) + (vi * vd + vd)
    merged = vd * v.spatial_merge_size**2
    merger = vd + (merged * merged + merged) + (merged * v.out_hidden_size + v.out_hidden_size)
    vision = patch + v.depth * block + merger
    n_codes = 128
    new = {
        "codebook": n_codes * d,
        "inverse_dynamics": 4 * layer + d + d * n_codes,
        "policy": 8 * layer + d + d * n_codes,
        "world_merge": 2 * (2 * (2 * d) * inter + inter * d),
        # separate mean and log-variance MLPs, each d -> d/2 -> d
        "projector": 2 * ((d * (d // 2) + d // 2) + ((d // 2) * d + d)),
    }
    new["inverse_projector"] = new["projector"]
    return {"base": text + vision, **new}


@pytest.mark.parametrize("size", ["3b", "7b"])
def test_real_shape_parameter_counts_match_hand_computation(size):
    cfg = real_shape_config(size)
    with torch.device("meta"):
        model = LatentActionModel(LatentActionConfig(base_config=cfg.to_dict()))
    counted = {"base": sum(p.numel() for p in model.base.parameters())}
    for group in ("codebook", "inverse_dynamics", "policy", "world_merge", "projector", "inverse_projector"):
        counted[group] = sum(p.numel() for p in getattr(model, group).parameters())
    expected = _hand_count(cfg)
    total = sum(counted.values())
    print(f"\nQwen2.5-VL-{size.upper()} latent model parameters:")
    for key, value in counted.items():
        print(f"  {key:18s} {value / 1e6:10.2f} M")
    print(f"  {'total':18s} {total / 1e6:10.2f} M")
    assert counted == expected
    assert all(p.device.type == "meta" for p in model.parameters())
    # Known published sizes: 3.75B (3B, tied embeddings) and 8.29B (7B).
    assert abs(counted["base"] / 1e9 - {"3b": 3.754, "7b": 8.292}[size]) < 0.001


# ------------------------------------------------------------------------------------------------ causality
def _with_token(batch, pos, token):
    b = {k: v.clone() for k, v in batch.items()}
    b["input_ids"][:, pos] = token
    return b


def test_new_modules_take_a_partitioned_base_dtype(vlm_path):
    """Under ZeRO-3 with `zero.Init` the base arrives partitioned in DeepSpeed's dtype and DeepSpeed casts nothing
    more, so the new modules are built in the base's dtype (a bf16 base beside fp32 merge blocks fails at the first
    world-model matmul; the two-process bf16 run is `test_plan_check_benchmark_smoke`). A base that is not partitioned
    keeps fp32 new modules beside it (mixed precision by autocast, as the Trainer runs it)."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = LatentActionConfig(base_config=AutoModel.from_pretrained(vlm_path).config.to_dict(), **SMALL)
    for partitioned in (True, False):
        base = Qwen2_5_VLForConditionalGeneration.from_pretrained(vlm_path, dtype=torch.bfloat16)
        if partitioned:
            for i, p in enumerate(base.parameters()):  # what `zero.Init` leaves on each parameter
                p.ds_id = i
        model = LatentActionModel(config, base_model=base)
        new = {p.dtype for n, p in model.named_parameters() if not n.startswith("base.")}
        assert new == ({torch.bfloat16} if partitioned else {torch.float32}), (partitioned, new)
        assert {p.dtype for p in model.base.parameters()} == {torch.bfloat16}


def test_inverse_dynamics_reads_the_next_token_only(model, processor):
    batch = _batch(processor)
    seq = batch["input_ids"].shape[1]
    t = seq - 4  # a text position well after the image
    base = model.encode(**batch)
    ref = model.inverse_logits(base.states, base)
    changed_next = _with_token(batch, t + 1, 123)
    b1 = model.encode(**changed_next)
    out1 = model.inverse_logits(b1.states, b1)
    assert not torch.allclose(out1[:, t], ref[:, t]), "changing token t+1 must change the IDM code for step t"
    changed_after = _with_token(batch, t + 2, 123)
    b2 = model.encode(**changed_after)
    out2 = model.inverse_logits(b2.states, b2)
    torch.testing.assert_close(out2[:, t], ref[:, t])  # token t+2 is the future of step t+1, not of step t


def test_policy_is_causal_and_world_model_depends_on_code(model, processor):
    batch = _batch(processor)
    seq = batch["input_ids"].shape[1]
    t = seq - 5
    base = model.encode(**batch)
    ref = model.policy_logits(base.states, base)
    for later in range(t + 1, seq):
        b = model.encode(**_with_token(batch, later, 77))
        torch.testing.assert_close(model.policy_logits(b.states, b)[:, : t + 1], ref[:, : t + 1])
    e = base.states
    codes_a = torch.zeros(e.shape[:2], dtype=torch.long)
    codes_b = torch.ones(e.shape[:2], dtype=torch.long)
    assert not torch.allclose(model.world_logits(e, codes_a), model.world_logits(e, codes_b))


def test_world_output_forms(vlm_path, processor):
    batch = _batch(processor)
    torch.manual_seed(0)
    a = LatentActionModel.from_base(vlm_path, world_output="residual_minus_base", **SMALL).eval()
    torch.manual_seed(0)
    b = LatentActionModel.from_base(vlm_path, world_output="merge_delta", **SMALL).eval()
    base = a.encode(**batch)
    codes = torch.zeros(base.states.shape[:2], dtype=torch.long)
    la, lb = a.world_logits(base.states, codes), b.world_logits(base.states, codes)
    x, delta = a.world_merge(base.states, a.codebook(codes))
    norm, head = a.backbone.final_norm, a.backbone.lm_head
    torch.testing.assert_close(la, head(norm(x) - base.states))
    torch.testing.assert_close(lb, head(norm(delta)))


# ------------------------------------------------------------------------------------------------ gradients
def test_straight_through_gradient_reaches_codebook_and_idm_not_base(model, processor):
    model.train()
    batch = _batch(processor)
    out = model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    assert model.codebook.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.inverse_dynamics.parameters())
    assert all(p.grad is None for p in model.base.parameters())
    assert not any(p.requires_grad for p in model.base.parameters())


def test_set_trainable_groups(model):
    model.set_trainable(["policy"])
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"policy"}
    with pytest.raises(ValueError, match="Unknown module groups"):
        model.set_trainable(["decoder"])
    model.set_trainable([], base_modules=model.base_tail_prefixes(1))
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(".visual." in n for n in names) and any("embed_tokens" in n for n in names)
    assert any("layers.1." in n for n in names) and not any("layers.0." in n for n in names)
    assert model.config.base_weights_saved


# ------------------------------------------------------------------------------------------------ decoding
def test_cached_decoding_matches_recomputation_from_scratch(model, processor):
    batch = _batch(processor, questions=("Hi?", "What colour is the shape in this picture, please?"))
    assert batch["attention_mask"][0, 0] == 0  # rows of different prompt lengths, left padded
    gen = torch.Generator().manual_seed(0)
    steps = 6
    out = model.generate(**batch, max_new_tokens=steps, generator=gen, return_states=True, eos_token_id=[10**6])
    ids, mask, mm = batch["input_ids"], batch["attention_mask"], batch["mm_token_type_ids"]
    for t in range(steps):
        base = model.encode(ids, mask, batch["pixel_values"], batch["image_grid_thw"], mm)
        logits = model.policy_logits(base.states, base)[:, -1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, out.codes[:, t : t + 1]).squeeze(-1)
        token = model.world_logits(base.states[:, -1:], out.codes[:, t : t + 1])[:, -1].argmax(-1)
        assert torch.equal(token, out.completion_ids[:, t])
        torch.testing.assert_close(logp, out.code_logprobs[:, t], atol=1e-5, rtol=1e-5)
        ids = torch.cat([ids, token[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        mm = torch.cat([mm, torch.zeros_like(mm[:, :1])], 1)
    # The returned states let a trainer recompute the policy without the base.
    view = model.states_view(out.states, out.attention_mask[:, :-1], out.position_ids[..., :-1])
    prompt_len = batch["input_ids"].shape[1]
    logits = model.policy_logits(out.states, view)[:, prompt_len - 1 :].float()
    logp = torch.log_softmax(logits, -1).gather(-1, out.codes[..., None]).squeeze(-1)
    torch.testing.assert_close(logp, out.code_logprobs, atol=1e-5, rtol=1e-5)


def test_forced_codes_reproduce_world_model_argmax(model, processor):
    batch = _batch(processor)
    forced = torch.tensor([[3, 1, 4, 1], [5, 9, 2, 6]])
    out = model.generate(**batch, max_new_tokens=4, forced_codes=forced, eos_token_id=[10**6])
    assert torch.equal(out.codes, forced)
    seq = torch.cat([batch["input_ids"], out.completion_ids], 1)
    mask = torch.ones_like(seq)
    mask[:, : batch["attention_mask"].shape[1]] = batch["attention_mask"]
    mm = torch.cat([batch["mm_token_type_ids"], torch.zeros_like(out.completion_ids)], 1)
    base = model.encode(seq, mask, batch["pixel_values"], batch["image_grid_thw"], mm)
    p = batch["input_ids"].shape[1]
    tokens = model.world_logits(base.states[:, p - 1 : -1], forced).argmax(-1)
    assert torch.equal(tokens, out.completion_ids)


def test_finished_rows_stay_finished(model, processor):
    batch = _batch(processor)
    forced = torch.zeros(2, 5, dtype=torch.long)
    first = model.generate(**batch, max_new_tokens=5, forced_codes=forced, eos_token_id=[10**6])
    eos = int(first.completion_ids[0, 1])  # row 0 emits this token at step 1: call it EOS
    pad = 0
    out = model.generate(**batch, max_new_tokens=5, forced_codes=forced, eos_token_id=eos, pad_token_id=pad)
    row = out.completion_ids[0]
    stop = int((row == eos).nonzero()[0])
    assert stop <= 1
    assert (row[stop + 1 :] == pad).all()
    assert out.completion_mask[0, : stop + 1].all() and not out.completion_mask[0, stop + 1 :].any()


def test_right_padding_is_realigned(model, processor):
    batch = _batch(processor, questions=("Hi?", "What colour is the shape in this picture, please?"))
    processor.tokenizer.padding_side = "right"
    try:
        right = _batch(processor, questions=("Hi?", "What colour is the shape in this picture, please?"))
    finally:
        processor.tokenizer.padding_side = "left"
    assert right["attention_mask"][0, -1] == 0
    forced = torch.tensor([[1, 2, 3], [4, 5, 6]])
    a = model.generate(**batch, max_new_tokens=3, forced_codes=forced, eos_token_id=[10**6])
    b = model.generate(**right, max_new_tokens=3, forced_codes=forced, eos_token_id=[10**6])
    assert torch.equal(a.completion_ids, b.completion_ids)
    torch.testing.assert_close(a.code_logprobs, b.code_logprobs, atol=1e-5, rtol=1e-5)


def test_code_sampling_respects_top_k_and_temperature(model, processor):
    batch = _batch(processor)
    codes = set()
    for seed in range(8):
        out = model.generate(
            **batch, max_new_tokens=3, code_top_k=1, generator=torch.Generator().manual_seed(seed), eos_token_id=[-1]
        )
        greedy = model.generate(**batch, max_new_tokens=3, do_sample_codes=False, eos_token_id=[-1])
        assert torch.equal(out.codes, greedy.codes)  # top-k 1 is argmax
        out = model.generate(
            **batch, max_new_tokens=3, code_top_k=16, generator=torch.Generator().manual_seed(seed), eos_token_id=[-1]
        )
        codes.update(out.codes.flatten().tolist())
    assert len(codes) > 4  # sampling over the whole codebook explores


# ------------------------------------------------------------------------------------------------ save / load
def test_save_load_roundtrip_without_base_weights(model, processor, tmp_path):
    batch = _batch(processor)
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "model.safetensors"))
    assert saved and not any(k.startswith("base.") for k in saved)
    size = (tmp_path / "model.safetensors").stat().st_size
    base_size = sum(p.numel() * p.element_size() for p in model.base.parameters())
    assert size < sum(p.numel() * 4 for n, p in model.named_parameters() if not n.startswith("base.")) + 10_000
    assert base_size > 0
    loaded = AutoModel.from_pretrained(tmp_path)  # registered with the Auto classes
    assert isinstance(loaded, LatentActionModel)
    forced = torch.tensor([[1, 2, 3], [4, 5, 6]])
    a = model.generate(**batch, max_new_tokens=3, forced_codes=forced)
    b = loaded.generate(**batch, max_new_tokens=3, forced_codes=forced)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.code_logprobs, b.code_logprobs)
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1


def test_save_load_with_changed_base(model, processor, tmp_path):
    model.set_trainable([], base_modules=model.base_tail_prefixes(1))
    with torch.no_grad():
        model.base.lm_head.weight.add_(0.01)
        model.base.model.language_model.norm.weight.add_(0.5)
    model.save_pretrained(tmp_path)
    loaded = LatentActionModel.from_pretrained(tmp_path)
    assert loaded.config.base_weights_saved
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1


# ------------------------------------------------------------------------------------------------ architectures
def test_qwen2_vl_base(tiny_cache):
    path = tiny_vlm_path("tiny", arch="qwen2_vl", cache_dir=tiny_cache)
    model = LatentActionModel.from_base(path, **SMALL).eval()
    proc = AutoProcessor.from_pretrained(path)
    batch = _batch(proc)
    out = model.generate(**batch, max_new_tokens=3)
    assert out.completion_ids.shape == (2, 3)
    assert model.backbone.is_vlm and model.encode(**batch).position_ids.shape[0] == 3


def _text_batch(tokenizer):
    return dict(tokenizer(["a red circle", "two blue squares and a star"], return_tensors="pt", padding=True))


def test_text_only_causal_lm_bases(tiny_cache):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = tiny_lm_path("tiny", cache_dir=tiny_cache)
    tok = AutoTokenizer.from_pretrained(path)
    qwen = LatentActionModel.from_base(path, **SMALL).eval()
    llama_base = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=256,
        )
    )
    llama = LatentActionModel.from_base(llama_base, **SMALL).eval()
    for model in (qwen, llama):
        batch = _text_batch(tok)
        out = model.generate(**batch, max_new_tokens=4, return_states=True, eos_token_id=[-1])
        assert out.completion_ids.shape == (2, 4)
        view = model.states_view(out.states, out.attention_mask[:, :-1], out.position_ids[..., :-1])
        p = batch["input_ids"].shape[1]
        logits = model.policy_logits(out.states, view)[:, p - 1 :].float()
        logp = torch.log_softmax(logits, -1).gather(-1, out.codes[..., None]).squeeze(-1)
        torch.testing.assert_close(logp, out.code_logprobs, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ bad input
def test_unsupported_architecture_is_named():
    from transformers import GPT2Config, GPT2LMHeadModel

    base = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(NotImplementedError, match="qwen2_5_vl.*qwen2_vl.*qwen2.*llama"):
        LatentActionModel.from_base(base)


def test_codebook_size_below_two_is_rejected(vlm_path):
    with pytest.raises(ValueError, match="codebook_size must be at least 2"):
        LatentActionModel.from_base(vlm_path, codebook_size=1)


def test_prompt_longer_than_maximum(model, processor):
    batch = _batch(processor)
    with pytest.raises(ValueError, match="at most"):
        model.encode(input_ids=torch.ones(1, 5000, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds the base model's maximum"):
        model.generate(**batch, max_new_tokens=4000)


def test_images_without_image_tokens(model, processor):
    batch = _batch(processor)
    ids = torch.full_like(batch["input_ids"], 5)
    with pytest.raises(ValueError, match="no image tokens"):
        model.encode(ids, batch["attention_mask"], batch["pixel_values"], batch["image_grid_thw"])
    with pytest.raises(ValueError, match="image_grid_thw"):
        model.encode(batch["input_ids"], batch["attention_mask"])


def test_latent_generate_function_is_the_model_method(model, processor):
    batch = _batch(processor)
    forced = torch.tensor([[1, 2], [3, 4]])
    a = latent_generate(model, **batch, max_new_tokens=2, forced_codes=forced)
    b = model.generate(**batch, max_new_tokens=2, forced_codes=forced)
    assert torch.equal(a.sequences, b.sequences)


def test_placeholder_tokens_are_never_generated(model, processor):
    batch = _batch(processor)
    image_token = model.backbone.image_token_id
    world_logits = model.world_logits

    def favour_image_token(e, codes):  # make <|image_pad|> the world model's favourite token everywhere
        logits = world_logits(e, codes)
        logits[..., image_token] = 1e4
        return logits

    model.world_logits = favour_image_token
    raw = model.generate(**batch, max_new_tokens=3, do_sample_codes=False, suppress_token_ids=[], eos_token_id=[-1])
    assert (raw.completion_ids == image_token).all()
    out = model.generate(**batch, max_new_tokens=3, do_sample_codes=False, eos_token_id=[-1])
    assert not (out.completion_ids == image_token).any()


def test_given_state_dict_is_saved_without_frozen_base(model, tmp_path):
    # Under ZeRO-3 the Trainer gathers the full state dict and passes it to save_pretrained.
    model.save_pretrained(tmp_path, state_dict=model.state_dict())
    from safetensors.torch import load_file

    assert not any(k.startswith("base.") for k in load_file(str(tmp_path / "model.safetensors")))
    assert LatentActionModel.from_pretrained(tmp_path).config.codebook_size == 16


def test_trainer_computations_run_inside_forward(model, processor):
    batch = _batch(processor)
    calls = []

    def fn(m, **kwargs):
        calls.append(sorted(kwargs))
        return m.encode(**kwargs).states.shape

    shape = model(latent_fn=fn, **batch)
    assert shape[:2] == batch["input_ids"].shape
    assert calls == [sorted(batch)]


def test_tiny_build_refused_under_zero3(tmp_path):
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    keep = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}, "train_micro_batch_size_per_gpu": 1})
    try:
        with pytest.raises(RuntimeError, match="ZeRO-3 config is active"):
            tiny_vlm_path("tiny", cache_dir=tmp_path)
    finally:
        del keep
        unset_hf_deepspeed_config()
