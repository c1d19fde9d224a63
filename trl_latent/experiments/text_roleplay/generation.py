"""Batched chat generation with a transformers causal LM on the CPU: what the room measurement and the general corpus
both decode with.

[`generate_chats`] renders each conversation with the tokenizer's chat template (with the assistant turn opened),
left-pads a batch, and returns the new text of each row, greedy or sampled, plus the number of new tokens (up to and
including the end-of-turn token).
"""

from __future__ import annotations

import torch

__all__ = ["generate_chats", "load_base"]


def load_base(path):
    """A saved causal LM and its tokenizer, in eval mode, float32, left padding for batched generation."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


@torch.no_grad()
def generate_chats(
    model,
    tokenizer,
    conversations: list[list[dict]],
    max_new_tokens: int,
    sample: bool = False,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
) -> tuple[list[str], list[int]]:
    """The assistant's next turn for each conversation.

    Args:
        conversations: chat messages (`{"role", "content"}` with string contents), each ending with a user turn.
        max_new_tokens: the most tokens generated per row.
        sample: `False` for greedy decoding; `True` samples from the full distribution at `temperature` (no top-k,
            no top-p), each batch from its own generator state seeded by `seed` and the batch's position.
        batch_size: rows per `generate` call.

    Returns:
        `(texts, new_tokens)`: each row's decoded answer (special tokens dropped, whitespace stripped) and how many
        tokens it generated.
    """
    texts, counts = [], []
    stop = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>",) if t in tokenizer.get_vocab()]
    eos = stop or [tokenizer.eos_token_id]
    for start in range(0, len(conversations), batch_size):
        chunk = conversations[start : start + batch_size]
        rendered = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chunk]
        batch = tokenizer(rendered, return_tensors="pt", padding=True, add_special_tokens=False)
        options = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        if sample:
            torch.manual_seed(seed * 1_000_003 + start)
            options = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
            **options,
        )
        new = out[:, batch["input_ids"].shape[1] :]
        for row in new:
            ids = row.tolist()
            n = next((i + 1 for i, t in enumerate(ids) if t in eos), len(ids))
            counts.append(n)
            texts.append(tokenizer.decode(ids[:n], skip_special_tokens=True).strip())
    return texts, counts
