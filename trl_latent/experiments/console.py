"""Console output a person can read: phase headings, and the known-harmless messages of our dependencies quieted
narrowly (by logger and message, or by warning category and module), never all warnings.

`quiet_known_warnings()` is called by the CLI before the heavy imports (some of these messages are logged at import
time), never on import of the library: a library must not change its users' warning filters. Progress bars per
training run are in `trl_latent.experiments.progress`.

```python
>>> from trl_latent.experiments.console import heading
>>> heading("token arm")
<BLANKLINE>
== token arm
```
"""

from __future__ import annotations

import logging
import warnings

# Log messages (by logger) that say nothing actionable on the CPU job; matched as substrings. (bitsandbytes' kernel
# notice is dropped for every command by `trl_latent.commands.running.quiet_import_notices`, which the CLI calls first.)
_QUIET_LOGS = {
    # DeepSpeed announces at import that it fell back to the CPU accelerator.
    "DeepSpeed": ("Setting accelerator to CPU",),
    # TRL's trainers align the model's special tokens with the tokenizer's (the tiny models' config omits them).
    "transformers.trainer_utils": ("The tokenizer has new PAD/BOS/EOS tokens",),
}
# Deprecations raised inside dependencies by calls our code does not make (transformers' Trainer asks for the
# deprecated property itself), and DeprecationWarnings attributed to the dependencies' own modules.
_QUIET_FUTURE = (r"`is_gradient_checkpointing` is deprecated",)
_DEPENDENCY_MODULES = r"(transformers|trl|accelerate|peft|deepspeed|torch|datasets|sentence_transformers)(\..*)?\Z"


class _DropMessages(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def quiet_known_warnings() -> None:
    """Silence the known-harmless messages of the CPU demo and study (listed in this module), and the loading/saving
    progress bars of transformers; every other warning still shows. Idempotent."""
    from transformers.utils import logging as hf_logging

    for name, fragments in _QUIET_LOGS.items():
        logger = logging.getLogger(name)  # created now if the library is not imported yet; it reuses this logger
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(fragments))
    for message in _QUIET_FUTURE:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=_DEPENDENCY_MODULES)
    hf_logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" per save and load


def heading(text: str) -> None:
    """Print a phase heading on stdout."""
    print(f"\n== {text}", flush=True)
