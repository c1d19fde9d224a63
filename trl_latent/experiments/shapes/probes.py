"""What a plain VLM already knows of the task: its teacher-forced accuracy on the answer tokens of task dialogues.

The base of the embedded job stands in for a pretrained VLM that is fluent but has not seen the task: it should
predict well under all of a task answer's tokens before task SFT, and much more after it. [`answer_token_accuracy`]
measures that on dialogues in TRL's conversational VLM format (`messages` + `images`), the same measure as the latent
model's `health/base_accuracy` (trl_latent.metrics.latent_health) for a plain VLM.

```python
>>> from trl_latent.experiments.shapes.models import tiny_vlm
>>> from trl_latent.experiments.shapes.task_data import synthetic_sft_dataset
>>> model, processor = tiny_vlm("tiny", seed=0)
>>> 0.0 <= answer_token_accuracy(model, processor, synthetic_sft_dataset(2, seed=0)) <= 1.0
True
```
"""

from __future__ import annotations

import torch

__all__ = ["answer_token_accuracy"]


@torch.no_grad()
def answer_token_accuracy(model, processor, dataset, max_samples: int | None = None) -> float:
    """The share of the assistant answer's tokens that `model` predicts right (argmax, teacher forcing) given the
    system prompt, the image, the question and the answer so far, over the dialogues of `dataset`.

    Args:
        model: a `transformers` image-text-to-text model.
        processor: its processor (with a chat template).
        dataset: rows with `messages` (system, user, assistant; typed content parts) and `images`.
        max_samples (`int`, *optional*): score only the first `max_samples` rows.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    hits = total = 0
    n = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    try:
        for row in dataset.select(range(n)):
            messages, images = row["messages"], row["images"] or None
            if messages[-1]["role"] != "assistant":
                raise ValueError("answer_token_accuracy needs dialogues that end with the assistant's answer.")
            prompt = processor.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
            full = processor.apply_chat_template(messages, tokenize=False)
            prompt_ids = processor(text=[prompt], images=images, return_tensors="pt")["input_ids"]
            inputs = processor(text=[full], images=images, return_tensors="pt").to(device)
            ids = inputs["input_ids"][0]
            start = prompt_ids.shape[1]
            if not torch.equal(ids[:start].cpu(), prompt_ids[0]):
                raise ValueError("The chat template renders the prompt differently inside the full dialogue.")
            # The answer's tokens, up to (and without) the end-of-turn marker and what follows it.
            answer_text = "".join(p.get("text") or "" for p in messages[-1]["content"])
            n_answer = len(processor.tokenizer(answer_text, add_special_tokens=False)["input_ids"])
            logits = model(**inputs).logits[0]
            predicted = logits[start - 1 : start - 1 + n_answer].argmax(-1)
            hits += int((predicted == ids[start : start + n_answer]).sum())
            total += n_answer
    finally:
        model.train(was_training)
    return hits / total if total else float("nan")
