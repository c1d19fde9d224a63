"""The two latent decoding paths (`latent_generate(cache_implementation=...)`): a static KV cache for the base and the
policy (optionally with the decoding step compiled) gives the same codes and tokens as the dynamic cache, at tiny
size. Code log-probabilities and states agree to float rounding (the static path attends over a longer, masked
cache)."""

from __future__ import annotations

import gc

import pytest
import torch
from PIL import Image
from transformers import StaticCache

from tests.fixtures.models import tiny_lm, tiny_lm_path, tiny_vlm, tiny_vlm_path
from trl_latent.modeling import LatentActionModel, generation
from trl_latent.modeling.generation import free_decoding_caches, latent_generate

NEVER = [10**6]  # an EOS id no row can emit: every row decodes max_new_tokens steps
EXACT = ("sequences", "completion_ids", "completion_mask", "codes", "position_ids", "attention_mask")
CLOSE = ("code_logprobs", "states")


@pytest.fixture(scope="module")
def vlm(tiny_cache):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LatentActionModel.from_base(
            tiny_vlm_path("tiny", cache_dir=tiny_cache), codebook_size=16, inverse_layers=1, policy_layers=1
        )
    with torch.no_grad():  # codes that steer the tokens, so a wrong code shows as a wrong token
        model.codebook.proj.weight.mul_(100.0)
    return model.eval()


@pytest.fixture(scope="module")
def processor(tiny_cache):
    processor = tiny_vlm("tiny", cache_dir=tiny_cache)[1]
    processor.tokenizer.padding_side = "left"
    return processor


def ragged_batch(processor, rows: int = 3, padding_side: str = "left") -> dict:
    """Prompts of different lengths, each with an image: left-padded rows of different widths."""
    texts, images = [], []
    for i in range(rows):
        question = "What do you see?" * (1 + 2 * i)
        msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        texts.append(processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))
        images.append(Image.new("RGB", (56, 56), ("red", "green", "blue")[i % 3]))
    processor.tokenizer.padding_side = padding_side
    try:
        batch = dict(processor(text=texts, images=images, return_tensors="pt", padding=True))
    finally:
        processor.tokenizer.padding_side = "left"
    assert batch["attention_mask"].sum(-1).unique().numel() == rows  # really ragged
    return batch


def decode(model, batch, seed=0, **kwargs):
    return latent_generate(model, **batch, generator=torch.Generator().manual_seed(seed), **kwargs)


def assert_same_decoding(a, b):
    for name in EXACT:
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for name in CLOSE:
        if getattr(a, name) is not None or getattr(b, name) is not None:
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=1e-5, msg=name)


@pytest.mark.parametrize(
    "options",
    [
        dict(do_sample_codes=False),
        dict(do_sample_codes=True, code_top_k=8),
        dict(do_sample_codes=True, code_top_k=None, code_top_p=0.9, code_temperature=0.7),
        dict(do_sample_codes=True, token_strategy="sample", token_temperature=1.5),
    ],
    ids=["greedy", "sample_top_k", "sample_top_p", "sample_tokens_too"],
)
def test_static_cache_decodes_like_the_dynamic_cache(vlm, processor, options):
    batch = ragged_batch(processor)
    dynamic = decode(vlm, batch, max_new_tokens=6, eos_token_id=NEVER, return_states=True, **options)
    static = decode(
        vlm, batch, max_new_tokens=6, eos_token_id=NEVER, return_states=True, cache_implementation="static", **options
    )
    assert dynamic.completion_ids.shape == (3, 6)
    assert_same_decoding(dynamic, static)
    if options["do_sample_codes"]:  # the seed matters: another seed samples other codes (the test can tell)
        other = decode(
            vlm, batch, seed=1, max_new_tokens=6, eos_token_id=NEVER, cache_implementation="static", **options
        )
        assert not torch.equal(other.codes, static.codes)


def test_static_cache_with_right_padded_prompts(vlm, processor):
    left, right = ragged_batch(processor), ragged_batch(processor, padding_side="right")
    assert not bool(right["attention_mask"][:, -1].all())
    dynamic = decode(vlm, left, max_new_tokens=5, eos_token_id=NEVER, return_states=True)
    static = decode(
        vlm, right, max_new_tokens=5, eos_token_id=NEVER, return_states=True, cache_implementation="static"
    )
    assert_same_decoding(dynamic, static)


def test_static_cache_with_forced_codes(vlm, processor):
    batch = ragged_batch(processor)
    forced = torch.randint(0, 16, (3, 5), generator=torch.Generator().manual_seed(4))
    dynamic = decode(vlm, batch, max_new_tokens=5, forced_codes=forced, eos_token_id=NEVER, return_states=True)
    static = decode(
        vlm, batch, max_new_tokens=5, forced_codes=forced, eos_token_id=NEVER, return_states=True,
        cache_implementation="static",
    )  # fmt: skip
    assert torch.equal(static.codes, forced)
    assert_same_decoding(dynamic, static)


def test_static_cache_stops_early_when_every_row_has_finished(vlm, processor):
    batch = ragged_batch(processor)
    full = decode(vlm, batch, max_new_tokens=8, do_sample_codes=False, eos_token_id=NEVER)
    # Row 0 ends at its 2nd token, the others at their 3rd (the ids they emit then, unless emitted earlier).
    eos = sorted({int(full.completion_ids[0, 1])} | {int(t) for t in full.completion_ids[1:, 2]})
    ends = [int((torch.isin(row, torch.tensor(eos))).nonzero()[0]) for row in full.completion_ids]
    assert max(ends) < 7
    kwargs = dict(max_new_tokens=8, do_sample_codes=False, eos_token_id=eos, pad_token_id=0, return_states=True)
    dynamic = decode(vlm, batch, **kwargs)
    static = decode(vlm, batch, cache_implementation="static", **kwargs)
    assert_same_decoding(dynamic, static)
    assert static.completion_ids.shape[1] == max(ends) + 1  # stopped at the step the last row finished
    for row, end in enumerate(ends):
        assert static.completion_mask[row].tolist() == [1] * (end + 1) + [0] * (max(ends) - end)
        assert (static.completion_ids[row, end + 1 :] == 0).all()
    assert static.states.shape[1] == batch["input_ids"].shape[1] + max(ends)


def test_static_cache_on_a_text_only_base(tiny_cache):
    path = tiny_lm_path("tiny", cache_dir=tiny_cache)
    tokenizer = tiny_lm("tiny", cache_dir=tiny_cache)[1]
    tokenizer.padding_side = "left"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LatentActionModel.from_base(path, codebook_size=16, inverse_layers=1, policy_layers=1).eval()
    batch = dict(
        tokenizer(["a short prompt", "a much longer prompt than the first one"], return_tensors="pt", padding=True)
    )
    assert not bool(batch["attention_mask"][0].all())
    for options in (dict(do_sample_codes=False), dict(do_sample_codes=True, code_top_k=4)):
        dynamic = decode(model, batch, max_new_tokens=5, eos_token_id=NEVER, return_states=True, **options)
        static = decode(
            model, batch, max_new_tokens=5, eos_token_id=NEVER, return_states=True, cache_implementation="static",
            **options,
        )  # fmt: skip
        assert dynamic.position_ids.dim() == 2
        assert_same_decoding(dynamic, static)


def test_static_caches_are_sized_from_the_prompt_and_freed(vlm, processor, monkeypatch):
    batch = ragged_batch(processor)
    built = []
    original = generation._static_caches

    def spy(model, backbone, batch_size, length, reuse):
        caches = original(model, backbone, batch_size, length, reuse)
        built.append((length, reuse))
        return caches

    monkeypatch.setattr(generation, "_static_caches", spy)
    out = decode(vlm, batch, max_new_tokens=70, eos_token_id=NEVER, cache_implementation="static")
    width = batch["input_ids"].shape[1]
    expected = -(-(width + 70) // generation.STATIC_CACHE_MULTIPLE) * generation.STATIC_CACHE_MULTIPLE
    assert built == [(expected, False)]
    del out
    gc.collect()
    alive = [o for o in gc.get_objects() if isinstance(o, StaticCache)]
    assert not alive, "latent_generate kept a static cache alive after returning"


def test_bad_options_are_rejected(vlm, processor):
    batch = ragged_batch(processor, rows=2)
    with pytest.raises(ValueError, match=r"cache_implementation must be one of \('dynamic', 'static'\)"):
        decode(vlm, batch, max_new_tokens=2, cache_implementation="paged")
    with pytest.raises(ValueError, match="compile_step=True needs cache_implementation='static'"):
        decode(vlm, batch, max_new_tokens=2, compile_step=True)


@pytest.mark.parametrize("base", ["vlm", "text"])
def test_decoding_step_has_no_graph_break(base, vlm, processor, tiny_cache, monkeypatch):
    """`torch._dynamo.explain` traces one decoding step (base token forward, policy layers, code choice, world-model
    token) as a single graph, for a VL base (3-D mRoPE positions) and a text-only one, with sampled codes and tokens."""
    if base == "vlm":
        model, batch = vlm, ragged_batch(processor, rows=2)
    else:
        tokenizer = tiny_lm("tiny", cache_dir=tiny_cache)[1]
        model = LatentActionModel.from_base(
            tiny_lm_path("tiny", cache_dir=tiny_cache), codebook_size=16, inverse_layers=1, policy_layers=1
        ).eval()
        tokenizer.padding_side = "left"
        batch = dict(tokenizer(["one", "two and three"], return_tensors="pt", padding=True))
    calls = []
    step = generation.decode_step

    def capture(*args):
        calls.append(args)
        return step(*args)

    monkeypatch.setattr(generation, "decode_step", capture)
    decode(model, batch, max_new_tokens=3, eos_token_id=NEVER, token_strategy="sample", cache_implementation="static")
    assert len(calls) == 2
    explained = torch._dynamo.explain(step)(*calls[-1])
    reasons = [r.reason for r in explained.break_reasons]
    assert explained.graph_break_count == 0 and explained.graph_count == 1, reasons


@pytest.mark.slow
def test_compiled_step_decodes_like_the_dynamic_cache(vlm, processor):
    """`compile_step=True` (inductor on CPU; CUDA graphs on CUDA): same codes and tokens as the dynamic path, and a
    second call of the same shape reuses the compiled step and its caches (no recompilation)."""
    torch._dynamo.reset()
    batch = ragged_batch(processor)
    kwargs = dict(max_new_tokens=5, eos_token_id=NEVER, return_states=True, code_top_k=8)
    dynamic = decode(vlm, batch, **kwargs)
    compiled = decode(vlm, batch, cache_implementation="static", compile_step=True, **kwargs)
    assert_same_decoding(dynamic, compiled)
    kept = generation._REUSED_CACHES[vlm]
    counters = torch._dynamo.utils.counters
    frames = counters["stats"]["unique_graphs"]
    again = decode(vlm, batch, seed=0, cache_implementation="static", compile_step=True, **kwargs)
    assert counters["stats"]["unique_graphs"] == frames  # no recompilation
    assert generation._REUSED_CACHES[vlm] is kept
    assert_same_decoding(dynamic, again)
    free_decoding_caches(vlm)
    assert vlm not in generation._REUSED_CACHES


def test_exponential_race_samples_the_categorical_distribution():
    """Both paths sample with `argmax p / E` (E ~ Exp(1), drawn outside the compiled step): the draws follow `probs`
    and never pick a zero-probability entry (filtered codes, suppressed tokens)."""
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0]).expand(40_000, -1)
    noise = generation.exponential_noise(probs.shape, probs.device, torch.Generator().manual_seed(0))
    draws = generation.sample_categorical(probs, noise)
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    torch.testing.assert_close(freq, probs[0], rtol=0, atol=0.01)
    assert freq[3] == 0
