"""The text role-play task's rule reward (trl_latent/experiments/text_roleplay/reward.py): its table, row by row.

Every answer the task's own patterns give scores 1.0; each kind of error scores clearly less, by the amount the table
in the module's docstring says."""

import random

import pytest

from trl_latent.experiments.text_roleplay.characters import ALL_CHARACTERS
from trl_latent.experiments.text_roleplay.reward import SUCCESS_BAR, score, text_roleplay_reward
from trl_latent.experiments.text_roleplay.task import KINDS, Scene, SceneObject, all_answers, task_prompts

PARK = Scene(
    "a sunny park",
    (
        SceneObject("dog", "brown", 2),
        SceneObject("kite", "red", 1),
        SceneObject("duck", "yellow", 1),
        SceneObject("apple", "green", 3),
    ),
)
MARA = "Captain Mara Flint"
VOICE = "Shiver me timbers! {} Aye, a treasure fit for my deck, matey!"


def reward(text, kind, target="", character=MARA, scene=PARK):
    return score(text, character, kind, scene.to_json(), target)["reward"]


@pytest.mark.parametrize("split", ["train", "heldout", "heldout-characters"])
def test_every_pattern_answer_scores_one(split):
    rows = task_prompts(split, 40, seed=3)
    assert {r["kind"] for r in rows} == set(KINDS)
    for row in rows:
        answers = all_answers(row["character"], row["kind"], row["scene"], row["target"])
        assert len(answers) >= 36  # 3 phrasings x 3 voice lines x 4 orders at least
        assert len(set(answers)) == len(answers)
        rewards = text_roleplay_reward(
            answers,
            character=[row["character"]] * len(answers),
            kind=[row["kind"]] * len(answers),
            scene=[row["scene"]] * len(answers),
            target=[row["target"]] * len(answers),
        )
        assert rewards == [1.0] * len(answers), [a for a, r in zip(answers, rewards) if r != 1.0][:3]


def test_several_right_answers_not_only_the_patterns():
    """Any animal of the scene, a digit for a count, free phrasing and any order are right."""
    assert reward(VOICE.format("A little yellow duck paddles by."), "animal") == 1.0
    assert reward(VOICE.format("Those brown dogs!"), "animal") == 1.0
    assert reward(VOICE.format("I see 2 dogs."), "count", "dog") == 1.0
    assert reward(VOICE.format("Kite and apples."), "notice") == 1.0
    assert reward("Aye matey, the kite flying there is red! Shiver me timbers!", "colour", "kite") == 1.0
    assert reward(VOICE.format("Some green apples."), "food") == 1.0


@pytest.mark.parametrize(
    "kind, target, content, expected",
    [
        # wrong content: 0 for content, the voice's half stays
        ("colour", "kite", "The kite is blue.", 0.5),
        ("count", "dog", "There are three dogs.", 0.5),
        ("animal", "", "I spot a grey goat.", 0.5),
        ("food", "", "You could eat a cake.", 0.5),
        ("notice", "", "I notice a tent and a sled.", 0.5),
        # off-topic: nothing of what was asked
        ("colour", "kite", "What a lovely day for a walk.", 0.5),
        ("animal", "", "The kite flies high above the park.", 0.5),
        ("count", "dog", "The dogs are brown.", 0.5),
        # hedged: right and wrong together, half the content
        ("colour", "kite", "The kite is red or maybe blue.", 0.75),
        ("count", "dog", "Two dogs, or three.", 0.75),
        ("animal", "", "A brown dog and a goat.", 0.75),
        ("notice", "", "I notice a kite.", 0.75),
        ("notice", "", "A kite, a dog and a tent.", 0.75),
    ],
)
def test_content_errors_score_less(kind, target, content, expected):
    assert reward(VOICE.format(content), kind, target) == expected


def test_voice_partial_credit_and_errors():
    right = "The kite is red."
    assert reward(f"Shiver me timbers! {right} Ahoy, matey!", "colour", "kite") == 1.0
    # missing voice: content only
    assert reward(right, "colour", "kite") == 0.5
    # catchphrase alone, one voice word, two voice words (a third adds nothing)
    assert reward(f"Shiver me timbers! {right}", "colour", "kite") == 0.75
    assert reward(f"Ahoy! {right}", "colour", "kite") == 0.625
    assert reward(f"Ahoy, matey! {right}", "colour", "kite") == 0.75
    assert reward(f"Ahoy, matey, aye! {right}", "colour", "kite") == 0.75
    # another character's voice: no credit for it, and it costs the character's own voice
    assert reward(f"Mamma mia, what a feast! {right} Bellissimo, delizioso!", "colour", "kite") == 0.5
    assert reward(f"Shiver me timbers! {right} Ahoy, matey! Bellissimo!", "colour", "kite") == 0.75
    # the same answer in the character whose voice it is scores full marks
    chef = "Mamma mia, what a feast! The kite is red. Bellissimo, delizioso!"
    assert reward(chef, "colour", "kite", character="Chef Rosa Bellini") == 1.0


def test_empty_format_break_and_rambling():
    good = VOICE.format("The kite is red.")
    assert reward("", "colour", "kite") == 0.0
    assert reward("   \n", "colour", "kite") == 0.0
    assert reward(good + " User: and now?", "colour", "kite") == 0.5
    assert reward(good + "<|im_start|>", "colour", "kite") == 0.5
    assert reward(good + " It was a fine day." * 12, "colour", "kite") == 0.5


def test_success_bar():
    parts = score(VOICE.format("The kite is red."), MARA, "colour", PARK.to_json(), "kite")
    assert parts["success"] and parts["content"] == 1.0 and parts["voice"] == 1.0
    assert not score("The kite is red.", MARA, "colour", PARK.to_json(), "kite")["success"]
    assert (
        score("Shiver me timbers! The kite is red.", MARA, "colour", PARK.to_json(), "kite")["reward"] == SUCCESS_BAR
    )


def test_trl_signature_reads_conversational_completions_and_metadata():
    row = task_prompts("heldout", 1, seed=0)[0]
    text = all_answers(row["character"], row["kind"], row["scene"], row["target"])[0]
    completions = [[{"role": "assistant", "content": text}], text, ""]
    n = len(completions)
    rewards = text_roleplay_reward(
        completions,
        character=[row["character"]] * n,
        kind=[row["kind"]] * n,
        scene=[row["scene"]] * n,
        target=[row["target"]] * n,
        prompts=[row["prompt"]] * n,  # TRL passes more columns; the reward ignores them
    )
    assert rewards == [1.0, 1.0, 0.0]


def test_unknown_character_is_a_clear_error():
    with pytest.raises(KeyError, match="Unknown character 'Nobody'"):
        score("hi", "Nobody", "colour", PARK.to_json(), "kite")


def test_voices_are_disjoint_and_lines_speak_only_their_own_voice():
    voice_words = {n: set(c["voice_words"]) for n, c in ALL_CHARACTERS.items()}
    names = list(voice_words)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not voice_words[a] & voice_words[b], (a, b)
    rng = random.Random(0)
    for name, c in ALL_CHARACTERS.items():
        for line in c["voice_lines"]:
            parts = score(f"{c['catchphrase']} {line}", name, "notice", PARK.to_json())
            assert parts["voice"] == 1.0, (name, line)  # catchphrase + at least two own words, no other's
            assert parts["content"] == 0.0  # a voice line names nothing of a scene
        other = rng.choice([n for n in names if n != name])
        assert score(c["voice_lines"][0], other, "notice", PARK.to_json())["voice"] == 0.0
