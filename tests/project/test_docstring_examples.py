"""The `Example` blocks in the library's docstrings run as written, on offline tiny models built by the library
itself (not by the embedded experiments), so a reader can paste them."""

import doctest

import pytest

from trl_latent.modeling import model, tiny
from trl_latent.training import latent_grpo_trainer, latent_sft_trainer, token_grpo_trainer

EXAMPLES = {
    "modeling.tiny": tiny,
    "LatentActionModel": model.LatentActionModel,
    "LatentSFTTrainer": latent_sft_trainer.LatentSFTTrainer,
    "LatentGRPOTrainer": latent_grpo_trainer.LatentGRPOTrainer,
    "TokenGRPOTrainer": token_grpo_trainer.TokenGRPOTrainer,
}


class _WithoutTrainerLogs(doctest.OutputChecker):
    """The Trainer prints its log dicts while `train()` runs; they are the Trainer's output, not the example's."""

    def check_output(self, want, got, optionflags):
        got = "".join(line for line in got.splitlines(keepends=True) if not line.startswith("{'"))
        return super().check_output(want, got, optionflags)


def _settle_one_time_warnings():
    """DeepSpeed prints which accelerator it picked on its first use, on stdout; let it happen before the examples
    run, so their output is theirs."""
    try:
        from deepspeed.accelerator import get_accelerator
    except ImportError:
        return
    get_accelerator()


@pytest.mark.parametrize("name", EXAMPLES)
def test_docstring_example_runs(name, tiny_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("TRL_LATENT_CACHE", str(tiny_cache))
    monkeypatch.chdir(tmp_path)
    _settle_one_time_warnings()
    obj = EXAMPLES[name]
    # The docstrings fence their examples with ``` (Hugging Face's doc style): the fences are not expected output.
    text = "\n".join(line for line in obj.__doc__.splitlines() if line.strip() not in ("```", "```python"))
    test = doctest.DocTestParser().get_doctest(text, {}, name, None, 0)
    runner = doctest.DocTestRunner(
        checker=_WithoutTrainerLogs(), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
    assert len(test.examples) >= 3
