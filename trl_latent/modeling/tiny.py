"""Offline tiny models and processors, built in-process and deterministically from a seed.

Nothing here downloads anything. The tiny Qwen2.5-VL uses the **stock** `Qwen2_5_VLProcessor` with a byte-level BPE
tokenizer trained with `tokenizers` on a corpus the caller gives (`corpus=`), the Qwen special tokens in Qwen order,
TRL's Qwen2.5-VL chat template and left padding. Models are saved with `save_pretrained` to a cache folder and
reloaded from there, so every caller gets a model exactly as `from_pretrained` would give it.

```python
>>> from trl_latent.modeling.tiny import tiny_vlm
>>> corpus = ["A red circle.", "Two blue squares on a white background.", "What do you see?"]
>>> model, processor = tiny_vlm("tiny", seed=0, corpus=corpus)
>>> model.config.text_config.hidden_size
64
```
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .backbone import CAUSAL_LM_MODEL_TYPES, VLM_MODEL_TYPES

logger = logging.getLogger(__name__)

# Qwen2.5's added tokens, in the order Qwen assigns them ids (151643, 151644, ...).
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Qwen's pre-tokenisation regex (the one `Qwen2Tokenizer` uses).
_PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
_FACTORY_VERSION = 5  # bump when the build recipe changes: cached folders of an older recipe are rebuilt


@dataclass(frozen=True)
class TinySpec:
    """The shape of a tiny model. `tiny` is for unit tests (seconds); `small` learns the synthetic task fully."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vision_hidden_size: int
    vision_depth: int
    vision_heads: int
    bpe_vocab_size: int = 440
    max_position_embeddings: int = 2048
    image_min_pixels: int = 56 * 56
    image_max_pixels: int = 112 * 112


TINY_SPECS: dict[str, TinySpec] = {
    # ~0.2M parameters: unit tests.
    "tiny": TinySpec(64, 128, 2, 4, 2, vision_hidden_size=32, vision_depth=1, vision_heads=2),
    # ~0.7M parameters: learns the shapes role-play task completely on a 2-core CPU (docs/architecture.md section 8).
    "small": TinySpec(128, 256, 2, 4, 2, vision_hidden_size=64, vision_depth=2, vision_heads=4),
}

SUPPORTED_TINY_ARCHS = VLM_MODEL_TYPES  # a tiny model of every architecture the library supports


def default_cache_dir() -> Path:
    """Where built tiny models live: `$TRL_LATENT_CACHE` or `~/.cache/trl_latent`."""
    return Path(os.environ.get("TRL_LATENT_CACHE", Path.home() / ".cache" / "trl_latent"))


def _spec(size: str) -> TinySpec:
    if size not in TINY_SPECS:
        raise ValueError(f"Unknown tiny model size {size!r}; choose one of {sorted(TINY_SPECS)}.")
    return TINY_SPECS[size]


def _checked_corpus(corpus) -> list[str]:
    if isinstance(corpus, str) or not corpus or not all(isinstance(text, str) for text in corpus):
        raise ValueError(
            "corpus must be a non-empty sequence of texts to train the tiny tokenizer on (the texts the model will "
            "read), e.g. the prompts and answers of your dataset."
        )
    return list(corpus)


def _mrope_section(head_dim: int) -> list[int]:
    # Qwen2.5-VL splits the rotary half-dimension into (temporal, height, width) sections, 16/24/24 of 64 for 3B.
    half = head_dim // 2
    t = half // 4
    h = (half - t) // 2
    return [t, h, half - t - h]


# ----------------------------------------------------------------------------------------------------- tokenizer
def _train_bpe(corpus: Sequence[str], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The vocabulary and merges of a byte-level BPE (Qwen's pre-tokenisation) trained on `corpus`."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    corpus = _checked_corpus(corpus)
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        special_tokens=[],
    )
    bpe.train_from_iterator(sorted(corpus), trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    return dict(state["vocab"]), merges


def build_tokenizer(corpus: Sequence[str], vocab_size: int = 440):
    """A Qwen2 byte-level BPE tokenizer trained on `corpus` (the texts the tiny model will read), with Qwen's
    special tokens appended in Qwen order, `<|im_end|>` as EOS and left padding."""
    from transformers import Qwen2Tokenizer

    vocab, merges = _train_bpe(corpus, vocab_size)
    # Qwen's special tokens take the ids right after the BPE vocabulary, in Qwen order, before the constructor sees
    # eos/pad (which would otherwise be appended first).
    for token in QWEN_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        errors="replace",
        model_max_length=32768,
        padding_side="left",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS)})
    tokenizer.padding_side = "left"
    return tokenizer


# The special tokens of SmolLM2's tokenizer (a Llama base), in its order (ids 0, 1, 2).
CHATML_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# SmolLM2-Instruct's chat template (ChatML with a default system turn) with a shorter default system prompt: a template
# without `{% generation %}` markers that TRL has no training version of, as real instruct models often ship.
CHATML_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_chatml_tokenizer(corpus: Sequence[str], vocab_size: int = 440):
    """A byte-level BPE tokenizer shaped like SmolLM2-Instruct's (the tiny Llama's): its special tokens first
    (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`), `<|im_end|>` as EOS, a ChatML chat template without generation
    markers, right padding and **no pad token**, as real Llama-family tokenizers often come."""
    from transformers import GPT2Tokenizer

    learned, merges = _train_bpe(corpus, vocab_size)
    vocab = {token: i for i, token in enumerate(CHATML_SPECIAL_TOKENS)}
    for token in sorted(learned, key=learned.get):
        vocab.setdefault(token, len(vocab))
    tokenizer = GPT2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<|endoftext|>",
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token=None,
        model_max_length=8192,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(CHATML_SPECIAL_TOKENS)})
    tokenizer.chat_template = CHATML_CHAT_TEMPLATE
    return tokenizer


def _chat_template() -> str:
    from trl.chat_template_utils import qwen2_5_vl_chat_template

    return qwen2_5_vl_chat_template


def build_processor(spec: TinySpec, corpus: Sequence[str]):
    """The stock `Qwen2_5_VLProcessor` around the tiny tokenizer and a Qwen2-VL image processor."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tokenizer = build_tokenizer(corpus, spec.bpe_vocab_size)
    tokenizer.chat_template = _chat_template()
    size = {"shortest_edge": spec.image_min_pixels, "longest_edge": spec.image_max_pixels}
    image_processor = Qwen2VLImageProcessor(size=size, patch_size=14, merge_size=2, temporal_patch_size=2)
    video_processor = Qwen2VLVideoProcessor(size=size, patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=_chat_template(),
    )
    return processor


# -------------------------------------------------------------------------------------------------------- models
def _text_kwargs(spec: TinySpec, tokenizer, mrope: bool) -> dict:
    head_dim = spec.hidden_size // spec.num_attention_heads
    kwargs = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rms_norm_eps=1e-6,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    if mrope:
        kwargs["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 1000000.0,
            "mrope_section": _mrope_section(head_dim),
        }
    return kwargs


def _vlm_config(spec: TinySpec, tokenizer, arch: str):
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    token_ids = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    text = _text_kwargs(spec, tokenizer, mrope=True)
    if arch == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        vision = dict(
            depth=spec.vision_depth,
            hidden_size=spec.vision_hidden_size,
            intermediate_size=2 * spec.vision_hidden_size,
            num_heads=spec.vision_heads,
            out_hidden_size=spec.hidden_size,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[spec.vision_depth - 1],
        )
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **token_ids)
    if arch == "qwen2_vl":
        from transformers import Qwen2VLConfig

        vision = dict(
            depth=spec.vision_depth,
            embed_dim=spec.vision_hidden_size,
            hidden_size=spec.hidden_size,
            mlp_ratio=2,
            num_heads=spec.vision_heads,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
        )
        return Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **token_ids)
    raise ValueError(f"Unknown tiny architecture {arch!r}; choose one of {SUPPORTED_TINY_ARCHS}.")


def _seeded_init(build):
    # Build under a fixed seed so the same seed gives the same weights on any machine.
    def wrapper(seed: int, *args):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build(*args)

    return wrapper


def _fingerprint(kind: str, size: str, seed: int, arch: str, corpus: Sequence[str]) -> str:
    # The tokenizer corpus is part of the key: a changed corpus gives a new tokenizer, hence a new build.
    corpus = hashlib.sha256("\n".join(corpus).encode()).hexdigest()
    payload = json.dumps(
        {
            "kind": kind,
            "size": size,
            "seed": seed,
            "arch": arch,
            "spec": asdict(_spec(size)),
            "corpus": corpus,
            "v": _FACTORY_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _weights_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


_MANIFEST = "trl_latent_tiny.json"


def _check_not_empty(folder: Path) -> None:
    from safetensors import safe_open

    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            empty = [k for k in f.keys() if 0 in f.get_slice(k).get_shape()]
        if empty:
            raise RuntimeError(f"The tiny model build wrote empty tensors ({empty[:3]}...) to {path}.")


def _cached_build(kind: str, size: str, seed: int, arch: str, cache_dir, corpus, build_and_save) -> Path:
    """Return a folder holding a verified build, (re)building it when missing, stale or corrupt."""
    from filelock import FileLock

    fingerprint = _fingerprint(kind, size, seed, arch, corpus)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / f"{kind}-{arch}-{size}-seed{seed}-{fingerprint}"
    root.mkdir(parents=True, exist_ok=True)
    # Processes that ask for the same model at once (e.g. `accelerate launch` ranks) build it once.
    with FileLock(str(folder) + ".lock"):
        return _verified_or_built(folder, fingerprint, build_and_save)


def _verified_or_built(folder: Path, fingerprint: str, build_and_save) -> Path:
    manifest = folder / _MANIFEST
    if folder.exists():
        try:
            recorded = json.loads(manifest.read_text())
            if recorded["fingerprint"] == fingerprint and recorded["weights_sha256"] == _weights_digest(folder):
                return folder
            reason = "its weights do not match the recorded checksum"
        except (OSError, ValueError, KeyError) as err:
            reason = f"its manifest is missing or unreadable ({err})"
        logger.warning("Tiny model cache folder %s is corrupt (%s); rebuilding it.", folder, reason)
        shutil.rmtree(folder)
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        # Under a live ZeRO-3 config the model would be built partitioned and saved empty.
        raise RuntimeError(
            f"Cannot build the tiny model {folder.name} while a DeepSpeed ZeRO-3 config is active: build it first "
            "(call tiny_vlm_path / tiny_lm_path before creating the training config)."
        )
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build_and_save(tmp)
    _check_not_empty(tmp)
    (tmp / _MANIFEST).write_text(json.dumps({"fingerprint": fingerprint, "weights_sha256": _weights_digest(tmp)}))
    try:
        tmp.rename(folder)
    except OSError:  # another process finished the same build first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def tiny_vlm_path(
    size: str = "tiny", seed: int = 0, arch: str = "qwen2_5_vl", cache_dir=None, *, corpus: Sequence[str]
) -> Path:
    """Build (once) and return the folder of a tiny VLM and its processor, loadable with `from_pretrained`; the
    tokenizer is trained on `corpus` (the texts the model will read)."""
    spec = _spec(size)
    corpus = _checked_corpus(corpus)
    if arch not in SUPPORTED_TINY_ARCHS:
        raise ValueError(f"Unknown tiny architecture {arch!r}; choose one of {SUPPORTED_TINY_ARCHS}.")

    def build_and_save(folder: Path) -> None:
        from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2VLForConditionalGeneration

        processor = build_processor(spec, corpus)
        config = _vlm_config(spec, processor.tokenizer, arch)
        cls = Qwen2_5_VLForConditionalGeneration if arch == "qwen2_5_vl" else Qwen2VLForConditionalGeneration
        model = _seeded_init(lambda: cls(config))(seed)
        model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
        model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
        model.save_pretrained(folder)
        processor.save_pretrained(folder)

    return _cached_build("vlm", size, seed, arch, cache_dir, corpus, build_and_save)


def tiny_vlm(
    size: str = "tiny",
    seed: int = 0,
    arch: str = "qwen2_5_vl",
    cache_dir=None,
    dtype=torch.float32,
    *,
    corpus: Sequence[str],
):
    """A tiny Qwen2.5-VL (or Qwen2-VL) and its stock processor, reloaded from the cache folder."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = tiny_vlm_path(size, seed, arch, cache_dir, corpus=corpus)
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype)
    processor = AutoProcessor.from_pretrained(folder)
    processor.tokenizer.padding_side = "left"
    return model, processor


SUPPORTED_TINY_LM_ARCHS = CAUSAL_LM_MODEL_TYPES


def _llama_config(spec: TinySpec, tokenizer):
    """A tiny Llama shaped like SmolLM2 (tied embeddings, no pad token id): `spec`'s sizes, the tokenizer's ids."""
    from transformers import LlamaConfig

    kwargs = _text_kwargs(spec, tokenizer, mrope=False)
    kwargs.update(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=None,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
    )
    return LlamaConfig(**kwargs)


def tiny_lm_path(
    size: str = "tiny", seed: int = 0, cache_dir=None, *, corpus: Sequence[str], arch: str = "qwen2"
) -> Path:
    """Build (once) and return the folder of a tiny text-only causal LM and its tokenizer.

    `arch="qwen2"`: a Qwen2 with the tiny VLM's tokenizer for the same `corpus` (Qwen's special tokens, left padding,
    TRL's Qwen2.5 chat template). `arch="llama"`: a Llama shaped like SmolLM2-Instruct (tied embeddings) with a
    SmolLM2-like tokenizer ([`build_chatml_tokenizer`]: ChatML template without generation markers, no pad token).
    """
    spec = _spec(size)
    corpus = _checked_corpus(corpus)
    if arch not in SUPPORTED_TINY_LM_ARCHS:
        raise ValueError(f"Unknown tiny causal LM architecture {arch!r}; choose one of {SUPPORTED_TINY_LM_ARCHS}.")

    def build_and_save(folder: Path) -> None:
        from transformers import LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

        if arch == "llama":
            tokenizer = build_chatml_tokenizer(corpus, spec.bpe_vocab_size)
            model = _seeded_init(lambda: LlamaForCausalLM(_llama_config(spec, tokenizer)))(seed)
        else:
            from trl.chat_template_utils import qwen2_5_chat_template

            tokenizer = build_tokenizer(corpus, spec.bpe_vocab_size)
            tokenizer.chat_template = qwen2_5_chat_template
            config = Qwen2Config(**_text_kwargs(spec, tokenizer, mrope=False))
            model = _seeded_init(lambda: Qwen2ForCausalLM(config))(seed)
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return _cached_build("lm", size, seed, arch, cache_dir, corpus, build_and_save)


def tiny_lm(
    size: str = "tiny",
    seed: int = 0,
    cache_dir=None,
    dtype=torch.float32,
    *,
    corpus: Sequence[str],
    arch: str = "qwen2",
):
    """A tiny text-only causal LM (`arch`: `"qwen2"` or `"llama"`, see [`tiny_lm_path`]) and its tokenizer. The
    Qwen2 tokenizer pads on the left; the Llama one keeps its own (right) padding and has no pad token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_lm_path(size, seed, cache_dir, corpus=corpus, arch=arch)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if arch == "qwen2":
        tokenizer.padding_side = "left"
    return model, tokenizer
