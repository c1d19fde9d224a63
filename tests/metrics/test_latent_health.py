"""Content controllability in the latent-space health metrics: at the answer positions whose token begins a content
word of a kind, how many distinct words of that kind some code makes the world model say."""

import re

import pytest
import torch

from trl_latent.experiments.shapes.scenes import COLOURS, COUNT_WORDS, SHAPES
from trl_latent.experiments.shapes.task_data import synthetic_sft_dataset
from trl_latent.metrics.latent_health import (
    CONTENT_HEALTH_METRICS,
    HEALTH_METRICS,
    WordStarts,
    content_controllability,
    content_token_ids,
    latent_health,
)
from trl_latent.modeling import LatentActionModel
from trl_latent.training.latent_sft_config import LatentSFTConfig
from trl_latent.training.latent_sft_trainer import LatentSFTTrainer

CODES = 8
SCALE_CODES, SCALE_WORDS = 50.0, 5.0  # codes that matter, content words that win
PLURALS = tuple(shape + "s" for shape in SHAPES)
WORDS = {"colour": list(COLOURS), "shape": [*SHAPES, *PLURALS], "count": list(COUNT_WORDS)}


# ------------------------------------------------------------------------------------------------ the counting
def test_content_controllability_counts_distinct_right_kind_tokens_by_hand():
    colour, shape, count = {10, 11, 12}, {20, 21}, {30}
    targets = torch.tensor([10, 20, 5, 11, 21])  # position 2 is no content word; no target is a count word
    tokens = torch.tensor(
        [
            [10, 20, 5, 11, 1],
            [11, 10, 6, 11, 2],
            [12, 21, 7, 3, 10],
        ]
    )
    counts = content_controllability(tokens, targets, {"colour": colour, "shape": shape, "count": count})
    assert set(counts) == {"colour", "shape"}  # a kind no target begins is not measured
    # colour at 0: red, green, blue from the three codes -> 3; at 3: green twice and a non-word -> 1.
    assert counts["colour"].tolist() == [3, 1]
    # shape at 1: two shapes and a colour (the wrong kind) -> 2; at 4: no code says a shape -> 0.
    assert counts["shape"].tolist() == [2, 0]
    # Plain controllability at the same positions would say 3, 3, 3, 2, 3.


def test_a_token_of_two_kinds_counts_for_each():
    tokens = torch.tensor([[7, 7], [8, 9]])
    counts = content_controllability(tokens, torch.tensor([7, 9]), {"count": {7, 8}, "shape": {7, 9}})
    assert counts["count"].tolist() == [2]  # position 0 only (9 is no count word): 7 and 8
    assert counts["shape"].tolist() == [1, 2]  # position 0: 7 (8 is no shape); position 1: 7 and 9


def test_a_first_token_without_its_space_counts_only_where_a_word_begins():
    """`re` begins "red" after a space-less boundary (a new line) but is part of "hund|red" elsewhere."""
    colour = WordStarts(spaced=frozenset({10}), bare=frozenset({11}))
    targets = torch.tensor([10, 11, 11])
    tokens = torch.tensor([[10, 11, 11], [12, 10, 10]])
    word_start = torch.tensor([False, True, False])
    assert content_controllability(tokens, targets, {"colour": colour}, word_start)["colour"].tolist() == [1, 2]
    assert content_controllability(tokens, targets, {"colour": colour})["colour"].tolist() == [1, 2, 2]


class _CharTokenizer:
    """One token per character (id = code point) with the space its own token, like a BPE that splits " Red"."""

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def test_first_token_skips_a_split_off_space():
    kinds = content_token_ids(_CharTokenizer(), {"colour": ["Red", " blue "]})
    assert kinds == {"colour": WordStarts(spaced=frozenset(), bare=frozenset({ord("R"), ord("b")}))}


def test_first_tokens_in_both_contexts(tiny_processor):
    tokenizer = tiny_processor.tokenizer
    kinds = content_token_ids(tiny_processor, WORDS)  # a processor is read through its tokenizer
    assert set(kinds) == set(WORDS)
    for kind, words in WORDS.items():
        for word in words:
            at_start = tokenizer.encode(word, add_special_tokens=False)[0]
            after_space = tokenizer.encode(" " + word, add_special_tokens=False)[0]
            assert at_start in kinds[kind].bare and after_space in kinds[kind].spaced, (kind, word)  # "re" vs "Ġred"
    with pytest.raises(TypeError, match="list of words"):
        content_token_ids(tokenizer, {"colour": "red"})


# ------------------------------------------------------------------------------------------------ on a model
@pytest.fixture(scope="module")
def tiny_processor(tiny_cache):
    from transformers import AutoProcessor

    from tests.fixtures.models import tiny_vlm_path

    return AutoProcessor.from_pretrained(tiny_vlm_path("tiny", cache_dir=tiny_cache))


@pytest.fixture(scope="module")
def measured(tiny_cache, tiny_processor, tmp_path_factory):
    """A fresh tiny latent model, its health measured with and without content words, and the per-code argmax tokens
    of the same positions computed here, code by code. Seeded inside `fork_rng`, so the global random state the other
    tests see is the one they would see without this fixture (`random_state` holds it before and after)."""
    state = torch.get_rng_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the trainer below reseeds too (`args.seed`): both stay inside
        result = _measure(tiny_cache, tiny_processor, tmp_path_factory)
    result["random_state"] = (state, torch.get_rng_state())
    return result


def _measure(tiny_cache, tiny_processor, tmp_path_factory) -> dict:
    from tests.fixtures.models import tiny_vlm_path

    model = LatentActionModel.from_base(
        tiny_vlm_path("tiny", cache_dir=tiny_cache), codebook_size=CODES, inverse_layers=1, policy_layers=1
    )
    # Make the codes matter and the content words likely, so that different codes say different content words.
    ids = sorted(set().union(*(s.spaced | s.bare for s in content_token_ids(tiny_processor, WORDS).values())))
    with torch.no_grad():
        model.codebook.proj.weight.mul_(SCALE_CODES)
        model.backbone.lm_head.weight[ids] *= SCALE_WORDS
    args = LatentSFTConfig(
        str(tmp_path_factory.mktemp("content")),
        stage="policy_bc",
        use_text_only=False,
        max_steps=1,
        use_cpu=True,
        bf16=False,
        report_to="none",
    )
    dataset = synthetic_sft_dataset(6, seed=3, split="eval")
    words = {**WORDS, "voice": ["zigzag"]}  # a kind whose words no answer uses
    trainer = LatentSFTTrainer(
        model, args, train_dataset=dataset, processing_class=tiny_processor, health_content_words=words
    )
    with_words = trainer.measure_health(dataset, num_samples=6, batch_size=6)
    trainer._health_content_words = None
    without = trainer.measure_health(dataset, num_samples=6, batch_size=6)

    batch = trainer._health_collator([dataset[i] for i in range(6)])["paired"]
    steps = batch["loss_mask"][:, 1:].bool()
    with torch.no_grad():
        base = model.encode(
            batch["input_ids"],
            batch["attention_mask"],
            batch["pixel_values"],
            batch["image_grid_thw"],
            batch.get("mm_token_type_ids"),
        )
        e_steps = base.states[:, :-1][steps][None]
        tokens = [
            model.world_logits(e_steps, torch.full(e_steps.shape[:2], code))[0].argmax(-1).tolist()
            for code in range(CODES)
        ]
    targets = batch["input_ids"][:, 1:][steps].tolist()
    previous = [tiny_processor.tokenizer.decode([i]) for i in batch["input_ids"][:, :-1][steps].tolist()]
    answers = [dataset[i]["messages"][-1]["content"][0]["text"] for i in range(6)]
    return {
        "with": with_words,
        "without": without,
        "tokens": tokens,
        "targets": targets,
        "previous": previous,
        "answers": answers,
        "words": words,
    }


def _hand_count(measured, kinds):
    """Per kind: the distinct right-kind tokens over the codes at each position whose target begins a word of it (a
    token without its space only after a token that does not end in a letter or digit)."""
    per_kind = {}
    for kind, starts in kinds.items():
        per_kind[kind] = []
        for n, (target, previous) in enumerate(zip(measured["targets"], measured["previous"])):
            ids = starts.spaced | (starts.bare if not previous[-1:].isalnum() else set())
            if target in ids:
                per_kind[kind].append(len({column[n] for column in measured["tokens"] if column[n] in ids}))
    return per_kind


def test_content_controllability_equals_the_hand_count(measured, tiny_processor):
    health = measured["with"]
    counts = _hand_count(measured, content_token_ids(tiny_processor, measured["words"]))
    # The positions are the content words of the answers, one position per word.
    for kind, words in WORDS.items():
        said = sum(len(re.findall(rf"\b({'|'.join(words)})\b", answer)) for answer in measured["answers"])
        assert len(counts[kind]) == said > 0, kind
    assert counts["voice"] == []  # (c) no answer says "zigzag": the kind is not measured
    assert "health/content_controllability/voice" not in health and "health/content_positions/voice" not in health
    everything = [n for kind in WORDS for n in counts[kind]]
    assert health["health/content_positions"] == len(everything)
    assert health["health/content_controllability"] == pytest.approx(sum(everything) / len(everything))
    for kind in WORDS:
        assert health[f"health/content_positions/{kind}"] == len(counts[kind])
        assert health[f"health/content_controllability/{kind}"] == pytest.approx(sum(counts[kind]) / len(counts[kind]))
    # Not trivial: the codes say several right-kind words at some position; plain controllability counts any token.
    assert max(everything) > 1
    assert health["health/content_controllability"] < health["health/controllability"]


def test_measuring_leaves_the_global_random_state_alone(measured):
    before, after = measured["random_state"]
    assert torch.equal(before, after)


def test_content_metrics_only_with_content_words(measured):
    with_words, without = measured["with"], measured["without"]
    assert set(without) == set(HEALTH_METRICS)  # (b)
    assert set(CONTENT_HEALTH_METRICS) <= set(with_words)
    assert {k: with_words[k] for k in HEALTH_METRICS} == without  # the other metrics do not change
    for key in with_words.keys() - without.keys():
        assert key.startswith(CONTENT_HEALTH_METRICS)


def test_latent_health_needs_a_tokenizer_with_content_words():
    with pytest.raises(ValueError, match="tokenizer"):
        latent_health(None, [], content_words=WORDS)
