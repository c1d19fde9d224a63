"""`experiments.text_roleplay.generation`: batched chat generation cuts each row at its end-of-turn token and counts
the tokens it generated; sampling is seeded per batch."""

import torch

from trl_latent.experiments.shapes.models import tiny_lm_path
from trl_latent.experiments.text_roleplay import generation


class Planted:
    """A model whose `generate` appends planted token rows and records what it was asked."""

    def __init__(self, rows):
        self.rows, self.calls = rows, []

    def generate(self, input_ids, attention_mask, **kwargs):
        self.calls.append({"input_ids": input_ids, **kwargs})
        new = torch.tensor(self.rows[len(self.calls) - 1 :][: input_ids.shape[0]])
        return torch.cat([input_ids, new], dim=1)


def test_each_answer_ends_at_its_end_of_turn_and_counts_its_tokens(tiny_cache):
    model, tokenizer = generation.load_base(tiny_lm_path("tiny", cache_dir=tiny_cache))
    assert not model.training and model.dtype == torch.float32
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    red, circle = tokenizer(" red circle", add_special_tokens=False).input_ids[:2]
    planted = Planted([[red, circle, end, red], [circle, circle, circle, circle]])
    conversations = [
        [{"role": "user", "content": "Hi?"}],
        [{"role": "user", "content": "What colour are the circles?"}],
    ]
    texts, counts = generation.generate_chats(planted, tokenizer, conversations, max_new_tokens=4)
    assert counts == [3, 4]  # up to and including the end of turn; a row that never ends is cut at the limit
    assert texts == [tokenizer.decode([red, circle]).strip(), tokenizer.decode([circle] * 4).strip()]
    (call,) = planted.calls
    assert call["eos_token_id"] == [end] and call["max_new_tokens"] == 4 and call["do_sample"] is False
    assert call["input_ids"][0, 0] == tokenizer.pad_token_id  # the shorter prompt is padded on the left


def test_rows_go_in_batches_and_sampling_is_seeded_per_batch(tiny_cache):
    _, tokenizer = generation.load_base(tiny_lm_path("tiny", cache_dir=tiny_cache))
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    conversations = [[{"role": "user", "content": f"Question {i}?"}] for i in range(3)]

    def draws(seed):
        planted = Planted([[end]] * 3)
        states = []
        original = planted.generate

        def generate(*args, **kwargs):
            states.append(torch.rand(1).item())  # what the batch's seeded generator gives
            return original(*args, **kwargs)

        planted.generate = generate
        texts, counts = generation.generate_chats(
            planted, tokenizer, conversations, 2, sample=True, temperature=0.7, seed=seed, batch_size=2
        )
        assert texts == ["", "", ""] and counts == [1, 1, 1]
        assert [c["input_ids"].shape[0] for c in planted.calls] == [2, 1]
        assert all(c["do_sample"] and c["temperature"] == 0.7 and c["top_k"] == 0 for c in planted.calls)
        return states

    assert draws(seed=1) == draws(seed=1) != draws(seed=2)
