"""The offline tiny-model factory (`modeling.tiny`): determinism, the stock processor, save/reload, bad input."""

import logging

import pytest
import torch
from PIL import Image

from tests.fixtures.models import tiny_lm, tiny_vlm, tiny_vlm_path
from trl_latent.modeling import tiny as library_tiny
from trl_latent.modeling.real_shapes import real_shape_vlm
from trl_latent.modeling.tiny import _MANIFEST

TEXT = "Ahoy, matey! I spot two red circles on deck."


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _image(size=56, colour=(220, 30, 30)):
    return Image.new("RGB", (size, size), colour)


def _conversation():
    return [
        {"role": "system", "content": [{"type": "text", "text": "You are Captain Rolo."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What do you see in this picture?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": TEXT}]},
    ]


def test_same_seed_same_weights_and_tokenizer_ids(tiny_cache, tmp_path):
    model_a, processor_a = tiny_vlm("tiny", seed=0, cache_dir=tiny_cache)
    model_b, processor_b = tiny_vlm("tiny", seed=0, cache_dir=tmp_path)  # built again, from scratch
    _assert_same_weights(_state(model_a), _state(model_b))
    ids_a = processor_a.tokenizer(TEXT)["input_ids"]
    assert ids_a == processor_b.tokenizer(TEXT)["input_ids"]
    assert processor_a.tokenizer.get_vocab() == processor_b.tokenizer.get_vocab()
    # The text-only LM shares the vocabulary.
    _, lm_tokenizer = tiny_lm("tiny", seed=0, cache_dir=tiny_cache)
    assert lm_tokenizer(TEXT)["input_ids"] == ids_a
    assert lm_tokenizer.padding_side == processor_a.tokenizer.padding_side == "left"


def test_different_seed_different_weights(tiny_cache):
    model_0, _ = tiny_vlm("tiny", seed=0, cache_dir=tiny_cache)
    model_1, _ = tiny_vlm("tiny", seed=1, cache_dir=tiny_cache)
    s0, s1 = _state(model_0), _state(model_1)
    differ = [k for k in s0 if not torch.equal(s0[k], s1[k])]
    # Every randomly initialised matrix differs (norm weights start at 1 in both).
    matrices = [k for k in s0 if s0[k].dim() >= 2]
    assert set(matrices) <= set(differ)


def test_unknown_size_and_arch_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown tiny model size 'huge'.*'small', 'tiny'"):
        tiny_vlm("huge", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="Unknown tiny model size"):
        tiny_lm("medium", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="Unknown tiny architecture 'llava'"):
        tiny_vlm("tiny", arch="llava", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="Unknown Qwen2.5-VL size"):
        real_shape_vlm("13b")
    assert not any(tmp_path.iterdir())  # nothing half-built left behind


@pytest.mark.parametrize(("side", "image_tokens"), [(56, 4), (112, 16)])
def test_processor_round_trip(tiny_cache, side, image_tokens):
    _, processor = tiny_vlm("tiny", seed=0, cache_dir=tiny_cache)
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert processor.tokenizer.padding_side == "left"
    text = processor.apply_chat_template(_conversation(), tokenize=False)
    assert text.count("<|image_pad|>") == 1
    inputs = processor(text=[text], images=[_image(side)], return_tensors="pt")
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    ids = inputs["input_ids"][0]
    # One token per 2x2 block of 14-pixel patches.
    assert (ids == image_pad).sum().item() == image_tokens
    assert inputs["image_grid_thw"].prod().item() // 4 == image_tokens
    assert inputs["mm_token_type_ids"][0].sum().item() == image_tokens
    decoded = processor.tokenizer.decode(ids, skip_special_tokens=False)
    assert decoded == text.replace("<|image_pad|>", "<|image_pad|>" * image_tokens)
    # Every special token of the template is one token.
    for token in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>"):
        assert len(processor.tokenizer(token)["input_ids"]) == 1, token


def test_special_tokens_in_qwen_order(tiny_cache):
    from trl_latent.modeling.tiny import QWEN_SPECIAL_TOKENS

    _, processor = tiny_vlm("tiny", seed=0, cache_dir=tiny_cache)
    ids = processor.tokenizer.convert_tokens_to_ids(list(QWEN_SPECIAL_TOKENS))
    # Qwen assigns consecutive ids in this order (151643, 151644, ...).
    assert ids == list(range(ids[0], ids[0] + len(QWEN_SPECIAL_TOKENS)))


def test_save_reload_gives_identical_logits(tiny_cache, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model, processor = tiny_vlm("tiny", seed=0, cache_dir=tiny_cache)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    reloaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert type(reloaded_processor) is type(processor)
    text = processor.apply_chat_template(_conversation(), tokenize=False)
    inputs = processor(text=[text], images=[_image()], return_tensors="pt")
    inputs_reloaded = reloaded_processor(text=[text], images=[_image()], return_tensors="pt")
    for key in inputs:
        assert torch.equal(inputs[key], inputs_reloaded[key]), key
    model.eval()
    reloaded.eval()
    with torch.no_grad():
        logits = model(**inputs).logits
        logits_reloaded = reloaded(**inputs_reloaded).logits
    assert torch.equal(logits, logits_reloaded)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("damage", ["truncate_weights", "delete_manifest"])
def test_corrupt_cache_is_rebuilt(tiny_cache, tmp_path, caplog, damage):
    clean, _ = tiny_vlm("tiny", seed=0, cache_dir=tiny_cache)
    folder = tiny_vlm_path("tiny", seed=0, cache_dir=tmp_path)
    if damage == "truncate_weights":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        (folder / _MANIFEST).unlink()
    with caplog.at_level(logging.WARNING, logger="trl_latent.modeling.tiny"):
        rebuilt, processor = tiny_vlm("tiny", seed=0, cache_dir=tmp_path)
    assert "corrupt" in caplog.text and "rebuilding" in caplog.text
    assert (folder / _MANIFEST).exists()
    _assert_same_weights(_state(clean), _state(rebuilt))
    # A second load finds the repaired folder valid: no new warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="trl_latent.modeling.tiny"):
        tiny_vlm_path("tiny", seed=0, cache_dir=tmp_path)
    assert "corrupt" not in caplog.text


def test_library_builders_take_their_corpus(tmp_path):
    """The library's builders know no task: the tokenizer corpus is an argument, a different corpus is a different
    build (another vocabulary), and no corpus is a clear error."""
    corpus = ["Hello there, how are you today?", "A quiet morning by the sea.", "What a fine day for a walk!"]
    _, processor = library_tiny.tiny_vlm("tiny", cache_dir=tmp_path, corpus=corpus)
    _, shapes_processor = tiny_vlm("tiny", cache_dir=tmp_path)
    assert processor.tokenizer.get_vocab() != shapes_processor.tokenizer.get_vocab()
    assert len(processor.tokenizer("A quiet morning by the sea.").input_ids) < len(
        shapes_processor.tokenizer("A quiet morning by the sea.").input_ids
    )
    with pytest.raises(TypeError, match="corpus"):
        library_tiny.tiny_vlm_path("tiny", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="non-empty sequence of texts"):
        library_tiny.tiny_vlm_path("tiny", cache_dir=tmp_path, corpus="one string")
