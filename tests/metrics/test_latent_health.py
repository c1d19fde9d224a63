"""The latent-space health metrics (`metrics.latent_health`): content controllability (at the answer positions whose
token begins a content word of a kind, how many distinct words of that kind some code makes the world model say) and
code gain (what the IDM's and the policy's codes add over a random code)."""

import random
import re

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

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
from trl_latent.modeling.tiny import tiny_lm, tiny_lm_path
from trl_latent.training.latent_sft_config import LatentSFTConfig
from trl_latent.training.latent_sft_trainer import LatentSFTTrainer

CONTENT_CODES = 8
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
        tiny_vlm_path("tiny", cache_dir=tiny_cache), codebook_size=CONTENT_CODES, inverse_layers=1, policy_layers=1
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
            for code in range(CONTENT_CODES)
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


# ------------------------------------------------------------------------------------------- code gain
# Code gain in the health table: teacher-forced accuracy with the IDM's and the policy's code minus that with a seeded
# uniformly random code. Hand-checked on a planted model where the code decides the token, exactly 0 where codes cannot
# act; the sampled positions of a real-vocabulary health check; the trainer logs it.

CODES = 16


CORPUS = ["the red star is on the left.", "a blue circle on the right.", "two small squares."]


@pytest.fixture(scope="module")
def tokenizer_and_path(tiny_cache):
    path = tiny_lm_path("tiny", cache_dir=tiny_cache, corpus=CORPUS)
    return tiny_lm("tiny", cache_dir=tiny_cache, corpus=CORPUS)[1], path


def build(path):
    torch.manual_seed(0)
    return LatentActionModel.from_base(path, codebook_size=CODES, inverse_layers=1, policy_layers=1)


def answer_batch(target: int, other: int):
    """Two records of 10 tokens whose last 5 are the answer, every answer token `target`: 2 x 5 = 10 positions (the
    steps t = 4..8 predict tokens 5..9)."""
    ids = torch.tensor([[other] * 5 + [target] * 5, [other + 1] * 5 + [target] * 5])
    loss_mask = torch.zeros_like(ids, dtype=torch.bool)
    loss_mask[:, 5:] = True
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "loss_mask": loss_mask}


def test_planted_codes_decide_the_token(tokenizer_and_path):
    """The world model says `target` under codes 0-3 and `other` under codes 4-15; the IDM always picks code 0 (right
    everywhere), the policy code 4 (wrong everywhere). The random code is right where its seeded draw is below 4."""
    _, path = tokenizer_and_path
    model = build(path)
    target, other = 7, 11
    vocab = model.backbone.lm_head.weight.shape[0]

    def world_logits(e, codes):
        codes = codes if codes.dim() == e.dim() - 1 else codes.argmax(-1)
        return F.one_hot(torch.where(codes < 4, target, other), vocab).float()

    def fixed(code):
        return lambda e, base, cache=None: F.one_hot(torch.full(e.shape[:2], code), CODES).float()

    model.world_logits, model.inverse_logits, model.policy_logits = world_logits, fixed(0), fixed(4)
    health = latent_health(model, [answer_batch(target, other)], seed=3)
    # The hand count: the 10 random codes are the seeded draw the docstring names.
    drawn = torch.randint(CODES, (10,), generator=torch.Generator().manual_seed(3))
    right_by_chance = int((drawn < 4).sum())
    assert drawn.tolist() == [10, 8, 9, 3, 8, 8, 0, 5, 13, 3] and right_by_chance == 3
    assert health["health/world_accuracy_inverse"] == 1.0 and health["health/world_accuracy_policy"] == 0.0
    assert health["health/world_accuracy_random"] == 0.3
    assert health["health/code_gain_inverse"] == pytest.approx(0.7, abs=1e-12)
    assert health["health/code_gain_policy"] == pytest.approx(-0.3, abs=1e-12)
    assert health["health/world_accuracy_best"] == 1.0 and health["health/controllability"] == 2.0
    assert set(health) == set(HEALTH_METRICS)


def test_codes_that_cannot_act_gain_exactly_nothing(tokenizer_and_path):
    """A zero codebook: every code feeds the merge the same zero vector, so every code gives the same token."""
    tokenizer, path = tokenizer_and_path
    model = build(path)
    with torch.no_grad():
        model.codebook.proj.weight.zero_()
        model.world_merge.apply(lambda m: m.weight.normal_(0, 1.0) if isinstance(m, torch.nn.Linear) else None)
    ids = tokenizer(["the red star is on the left.", "two small squares."], padding=True, return_tensors="pt")
    batch = dict(ids, loss_mask=ids["attention_mask"].bool())
    health = latent_health(model, [batch])
    assert health["health/code_gain_inverse"] == 0.0 and health["health/code_gain_policy"] == 0.0
    assert health["health/world_accuracy_random"] == health["health/world_accuracy_inverse"]
    assert health["health/controllability"] == 1.0
    # With the codebook back, the same model's codes act and the gain is no longer exactly 0.
    with torch.no_grad():
        model.codebook.proj.weight.normal_(0, 100.0)
    acting = latent_health(model, [batch])
    assert acting["health/controllability"] > 1.0


def test_sampled_positions_keep_a_seeded_subset(tokenizer_and_path):
    """`positions` / `sweep_positions` measure a seeded sample: the same metrics as measuring only those positions."""
    tokenizer, path = tokenizer_and_path
    model = build(path)
    with torch.no_grad():
        model.codebook.proj.weight.mul_(100.0)
    rng = random.Random(0)
    texts = [" ".join(rng.choice(CORPUS).split()[: rng.randint(3, 6)]) for _ in range(8)]
    ids = tokenizer(texts, padding=True, return_tensors="pt")
    batch = dict(ids, loss_mask=ids["attention_mask"].bool())
    full = latent_health(model, [batch])
    sampled = latent_health(model, [batch], positions=10, sweep_positions=6, seed=1)
    assert sampled["health/positions"] == 10.0 and sampled["health/sweep_positions"] == 6.0
    assert "health/positions" not in full and "health/sweep_positions" not in full
    # Caps at or above the number of positions measure everything, exactly as without caps.
    n = int(batch["loss_mask"][:, 1:].sum())
    assert latent_health(model, [batch], positions=n, sweep_positions=n) == full
    with pytest.raises(ValueError, match="positions must be at least 1"):
        latent_health(model, [batch], positions=0)


def test_the_trainer_logs_code_gain(tokenizer_and_path, tmp_path):
    from trl_latent.training.latent_sft_config import LatentSFTConfig
    from trl_latent.training.latent_sft_trainer import LatentSFTTrainer

    tokenizer, path = tokenizer_and_path
    model = build(path)
    args = LatentSFTConfig(str(tmp_path), stage="inverse_warmup", max_steps=1, per_device_train_batch_size=4,
                           health_samples=4, use_cpu=True, bf16=False, report_to="none", save_strategy="no")  # fmt: skip
    trainer = LatentSFTTrainer(
        model, args, train_dataset=Dataset.from_dict({"text": CORPUS}), processing_class=tokenizer
    )
    trainer.train()
    logged = trainer.state.log_history[-1]
    for key in ("health/code_gain_inverse", "health/code_gain_policy", "health/world_accuracy_random"):
        assert key in logged and key in trainer.health
    gain = trainer.health["health/world_accuracy_inverse"] - trainer.health["health/world_accuracy_random"]
    assert trainer.health["health/code_gain_inverse"] == pytest.approx(gain)


def test_zero_initialised_merges_start_from_the_base_and_then_learn(tokenizer_and_path, tmp_path):
    """`world_merge_init="zeros"` with the `residual` form: the world model predicts exactly the base's logits under
    every code (code gain exactly 0, world accuracy the base's), and a step of stage 1 makes the codes act while the
    frozen base stays bit-identical. The default init does not start from the base."""
    from trl_latent.training.latent_sft_config import LatentSFTConfig
    from trl_latent.training.latent_sft_trainer import LatentSFTTrainer

    tokenizer, path = tokenizer_and_path
    ids = tokenizer(CORPUS, return_tensors="pt", padding=True)
    torch.manual_seed(0)
    model = LatentActionModel.from_base(
        path, codebook_size=CODES, inverse_layers=1, policy_layers=1, world_merge_init="zeros", world_output="residual"
    )
    with torch.no_grad():
        out = model.base(**ids, output_hidden_states=True)
        e = out.hidden_states[-1]  # after the final norm, as the latent model's base states are
        base_logits = out.logits.float()
        for code in (0, CODES - 1):
            codes = torch.full(ids["input_ids"].shape, code)
            torch.testing.assert_close(model.world_logits(e, codes), base_logits, rtol=0, atol=0)
    loss_mask = ids["attention_mask"].bool()
    batch = {**ids, "loss_mask": loss_mask}
    health = latent_health(model, [batch])
    assert health["health/code_gain_inverse"] == 0.0
    assert health["health/world_accuracy_inverse"] == health["health/base_accuracy"]

    base_before = {k: v.clone() for k, v in model.base.state_dict().items()}
    args = LatentSFTConfig(str(tmp_path), stage="inverse_warmup", max_steps=2, per_device_train_batch_size=3,
                           learning_rate=1e-2, world_output_schedule="residual", health_samples=3, use_cpu=True,
                           bf16=False, report_to="none", save_strategy="no")  # fmt: skip
    LatentSFTTrainer(
        model, args, train_dataset=Dataset.from_dict({"text": CORPUS}), processing_class=tokenizer
    ).train()
    assert all(block.down_proj.weight.abs().sum() > 0 for block in model.world_merge.blocks)
    with torch.no_grad():
        spread = [model.world_logits(e, torch.full(ids["input_ids"].shape, c)) for c in range(CODES)]
    assert (torch.stack(spread) - spread[0]).abs().max() > 0  # the codes now change what the world model says
    for name, value in model.base.state_dict().items():
        assert torch.equal(value, base_before[name]), name

    torch.manual_seed(0)
    default = LatentActionModel.from_base(path, codebook_size=CODES, inverse_layers=1, policy_layers=1,
                                          world_output="residual")  # fmt: skip
    with torch.no_grad():
        assert not torch.equal(default.world_logits(e, torch.zeros_like(ids["input_ids"])), base_logits)
    with pytest.raises(ValueError, match="world_merge_init must be one of"):
        LatentActionModel.config_class(world_merge_init="ones")
