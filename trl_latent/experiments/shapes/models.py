"""The library's tiny-model builders (`trl_latent.modeling.tiny`) bound to the embedded task's tokenizer corpus: the
tiny VLM, its processor and the tiny text-only LM every test, example and the demo build offline.

```python
>>> from trl_latent.experiments.shapes.models import tiny_vlm
>>> model, processor = tiny_vlm("tiny", seed=0)
>>> model.config.text_config.hidden_size
64
```
"""

from __future__ import annotations

from functools import cache

import torch

from ...modeling import tiny as _tiny
from .task_data import tokenizer_corpus


@cache
def _corpus() -> tuple[str, ...]:
    return tuple(tokenizer_corpus())


def tiny_vlm_path(size: str = "tiny", seed: int = 0, arch: str = "qwen2_5_vl", cache_dir=None):
    """[`~trl_latent.modeling.tiny.tiny_vlm_path`] with the embedded task's tokenizer corpus."""
    return _tiny.tiny_vlm_path(size, seed, arch, cache_dir, corpus=_corpus())


def tiny_vlm(size: str = "tiny", seed: int = 0, arch: str = "qwen2_5_vl", cache_dir=None, dtype=torch.float32):
    """[`~trl_latent.modeling.tiny.tiny_vlm`] with the embedded task's tokenizer corpus."""
    return _tiny.tiny_vlm(size, seed, arch, cache_dir, dtype, corpus=_corpus())


def tiny_lm_path(size: str = "tiny", seed: int = 0, cache_dir=None):
    """[`~trl_latent.modeling.tiny.tiny_lm_path`] with the embedded task's tokenizer corpus."""
    return _tiny.tiny_lm_path(size, seed, cache_dir, corpus=_corpus())


def tiny_lm(size: str = "tiny", seed: int = 0, cache_dir=None, dtype=torch.float32):
    """[`~trl_latent.modeling.tiny.tiny_lm`] with the embedded task's tokenizer corpus."""
    return _tiny.tiny_lm(size, seed, cache_dir, dtype, corpus=_corpus())


def build_tokenizer(vocab_size: int = 440):
    """[`~trl_latent.modeling.tiny.build_tokenizer`] on the embedded task's text."""
    return _tiny.build_tokenizer(_corpus(), vocab_size)


def build_processor(spec):
    """[`~trl_latent.modeling.tiny.build_processor`] on the embedded task's text."""
    return _tiny.build_processor(spec, _corpus())
