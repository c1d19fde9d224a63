"""Dataset forms: the prompt datasets the loaders build and the SFT form TRL's `SFTTrainer` takes.

The loaders (`mmrole`, `pcogalign`) build *prompt* datasets: `prompt` (a conversation whose user turn holds a
`{"type": "image"}` part), `image` and `reference`, as TRL's `GRPOTrainer` takes them. [`to_sft`] gives the SFT
form of such a dataset.
"""

from __future__ import annotations

from .mmrole_prompts import text_content

__all__ = ["to_sft"]


def to_sft(dataset):
    """The SFT form of a prompt dataset: `messages` (the prompt plus the reference as the assistant turn) and
    `images` (a list holding the sample's image), as TRL's `SFTTrainer` takes a vision-language dataset. The other
    columns are kept."""

    def convert(example):
        messages = list(example["prompt"]) + [{"role": "assistant", "content": text_content(example["reference"])}]
        return {"messages": messages, "images": [example["image"]]}

    return dataset.map(convert, remove_columns=["prompt", "image"])
