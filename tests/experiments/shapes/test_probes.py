"""`answer_token_accuracy` (trl_latent.experiments.shapes.probes), the number behind "base alone <= 0.6", counted by hand.

The models here are planted: their next-token logits are chosen from the input ids, so which answer tokens they get
right is known in advance and the exact accuracy can be counted on paper. The dialogues are the task's own (system
prompt, image, question), with answers written here.
"""

import pytest
import torch
from transformers.modeling_outputs import CausalLMOutput

from trl_latent.experiments.shapes.probes import answer_token_accuracy

# The answers and their tokens under the tiny task tokenizer (checked below, so the hand counts rest on them).
ANSWER_A = "Two blue squares, two blue squares!"
TOKENS_A = ["T", "wo", " blue", " squares", ",", " two", " blue", " squares", "!"]  # 9 tokens, " blue" twice
ANSWER_B = "Red circle."
TOKENS_B = ["R", "e", "d", " circ", "le", "."]  # 6 tokens, no " blue"


class PlantedModel(torch.nn.Module):
    """Logits whose argmax at position t is `predict(input_ids, t)`: a stand-in whose every guess is known."""

    def __init__(self, vocab_size: int, predict):
        super().__init__()
        self.vocab_size, self.predict = vocab_size, predict
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a device to read, as a real model has

    def forward(self, input_ids, attention_mask=None, **kwargs):
        ids = input_ids[0].tolist()
        logits = torch.zeros(1, len(ids), self.vocab_size)
        for t in range(len(ids)):
            logits[0, t, self.predict(ids, t)] = 1.0
        return CausalLMOutput(logits=logits)


@pytest.fixture(scope="module")
def processor(tiny_cache):
    from transformers import AutoProcessor

    from trl_latent.experiments.shapes.models import tiny_vlm_path

    return AutoProcessor.from_pretrained(tiny_vlm_path("tiny", cache_dir=tiny_cache))


@pytest.fixture(scope="module")
def dialogues(processor):
    """Two task dialogues (with their images) whose answers are ANSWER_A and ANSWER_B."""
    from datasets import Dataset

    from trl_latent.experiments.shapes.task_data import synthetic_sft_dataset

    rows = [dict(r) for r in synthetic_sft_dataset(2, seed=0)]
    for row, answer in zip(rows, (ANSWER_A, ANSWER_B)):
        row["messages"][-1] = {"role": "assistant", "content": [{"type": "text", "text": answer}]}
    tokenizer = processor.tokenizer
    for answer, tokens in ((ANSWER_A, TOKENS_A), (ANSWER_B, TOKENS_B)):
        ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
        assert [tokenizer.decode([i]) for i in ids] == tokens, "the hand counts below assume these tokens"
    return Dataset.from_list(rows)


def token_id(processor, text: str) -> int:
    (i,) = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    return i


def oracle_except(vocab_size: int, wrong: set[int]):
    """Right at every position (it reads the next id) except where the next id is in `wrong`."""

    def predict(ids, t):
        following = ids[t + 1] if t + 1 < len(ids) else 0
        return (following + 1) % vocab_size if following in wrong else following

    return predict


def test_a_model_right_everywhere_but_one_token_scores_the_hand_count(processor, dialogues):
    vocab = len(processor.tokenizer)
    blue, end_of_turn = token_id(processor, " blue"), processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    # Wrong at " blue" (2 of A's 9 answer tokens, none of B's 6) and at the end-of-turn marker, which is no answer
    # token: 13 of 15 answer tokens right, pooled over the answers' tokens (not the mean of 7/9 and 6/6, 0.889).
    model = PlantedModel(vocab, oracle_except(vocab, {blue, end_of_turn}))
    assert answer_token_accuracy(model, processor, dialogues) == pytest.approx(13 / 15, abs=1e-12)
    assert answer_token_accuracy(model, processor, dialogues, max_samples=1) == pytest.approx(7 / 9, abs=1e-12)
    # Right everywhere: 1.0 exactly; wrong at every answer token: 0.0 exactly.
    assert answer_token_accuracy(PlantedModel(vocab, oracle_except(vocab, set())), processor, dialogues) == 1.0
    answer_ids = {i for answer in (ANSWER_A, ANSWER_B) for i in processor.tokenizer(answer)["input_ids"]}
    assert answer_token_accuracy(PlantedModel(vocab, oracle_except(vocab, answer_ids)), processor, dialogues) == 0.0


def test_a_model_that_always_says_one_token_scores_its_share_of_the_answers(processor, dialogues):
    vocab = len(processor.tokenizer)
    blue, squares = token_id(processor, " blue"), token_id(processor, " squares")
    # " blue" is 2 of the 15 answer tokens, " squares" 2 as well; "." once (B's last token).
    for token, hits in ((blue, 2), (squares, 2), (token_id(processor, "."), 1)):
        model = PlantedModel(vocab, lambda ids, t, token=token: token)
        assert answer_token_accuracy(model, processor, dialogues) == pytest.approx(hits / 15, abs=1e-12)


def test_the_training_mode_is_restored_and_bad_dialogues_fail(processor, dialogues):
    vocab = len(processor.tokenizer)
    model = PlantedModel(vocab, oracle_except(vocab, set())).train()
    answer_token_accuracy(model, processor, dialogues)
    assert model.training
    rows = [dict(r) for r in dialogues]
    rows[0]["messages"] = rows[0]["messages"][:-1]  # ends with the question
    from datasets import Dataset

    with pytest.raises(ValueError, match="end with the assistant's answer"):
        answer_token_accuracy(model, processor, Dataset.from_list(rows))
