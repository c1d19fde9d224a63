"""The offline rubric reward: references score 1.0, wrong colour / shape / count / voice and garbage score lower."""

import re

import pytest

from trl_latent.experiments.shapes.reward import (
    RUBRIC_DIMENSIONS,
    answer_accuracy,
    answer_checks,
    completion_text,
    parse_scene,
    rubric_ratio,
    rubric_reward,
    rubric_scores,
    task_reward,
    voice_checks,
)
from trl_latent.experiments.shapes.scenes import (
    ALL_CHARACTERS,
    COLOURS,
    QUESTIONS,
    SHAPES,
    ShapesScene,
    all_answers,
    character_answer,
    reference_answer,
)
from trl_latent.experiments.shapes.task_data import synthetic_rl_dataset

SCENE = ShapesScene("red", "circle", 2)
REF = reference_answer("Captain Rolo", SCENE)  # "Ahoy, matey! I spot two red circles on deck. A bold and brave sight!"
WHAT = "What do you see in this picture?"


def _ratio(text, **kwargs):
    return rubric_ratio(text, REF, character="Captain Rolo", question=WHAT, **kwargs)


def test_every_pattern_of_every_character_is_a_right_answer():
    """Several right answers: judged against a reference in any one of the character's patterns, an answer in any
    other of its patterns scores at least 0.95 (here: 10 on every dimension) and passes every exact check."""
    for name in ALL_CHARACTERS:
        for colour in COLOURS:
            for shape in SHAPES:
                for count in (1, 2, 3, 4):
                    scene = ShapesScene(colour, shape, count)
                    answers = all_answers(name, scene)
                    assert len(answers) >= 4
                    for reference in answers:
                        assert parse_scene(reference) == scene
                        for question, _ in QUESTIONS[:2]:
                            for answer in answers:
                                scores = rubric_scores(answer, reference, character=name, question=question)
                                assert scores["response"] == dict.fromkeys(RUBRIC_DIMENSIONS, 10.0), answer
                        assert rubric_ratio(answers[-1], reference) >= 0.95  # character and scene inferred
                        assert all(answer_checks(a, reference, name)["all"] for a in answers)


def _swap(text: str, old: str, new: str) -> str:
    # Whole-word prefix swap that keeps a capital letter: "Red circles" -> "Green circles", "circles" -> "squares".
    return re.sub(
        rf"\b{old}|\b{old.capitalize()}", lambda m: new if m.group()[0].islower() else new.capitalize(), text
    )


def _wrong(answer: str, scene: ShapesScene, part: str, name: str) -> str:
    if part == "colour":
        return _swap(answer, scene.colour, COLOURS[(COLOURS.index(scene.colour) + 1) % len(COLOURS)])
    if part == "shape":
        return _swap(answer, scene.shape, SHAPES[(SHAPES.index(scene.shape) + 1) % len(SHAPES)])
    if part == "count":
        return _swap(answer, "two", "three")
    other = sorted(set(ALL_CHARACTERS) - {name})[0]  # voice: another character's answer, same scene
    return character_answer(other, scene, 0)


@pytest.mark.parametrize("part", ["colour", "shape", "count", "voice"])
def test_a_wrong_part_in_any_pattern_scores_clearly_less(part):
    """The table: for every character and every one of its patterns, a wrong colour, shape, count or voice drops the
    judge-like ratio below 0.95 (a right answer's floor) and the task reward to at most 0.8."""
    scene = ShapesScene("red", "circle", 2)
    for name in ALL_CHARACTERS:
        reference = character_answer(name, scene, 0)
        for answer in all_answers(name, scene):
            wrong = _wrong(answer, scene, part, name)
            assert wrong != answer
            ratio = rubric_ratio(wrong, reference, character=name, question=WHAT, scene=scene)
            task = task_reward([None], [wrong], reference=[reference], character=[name], question=[WHAT])[0]
            assert ratio <= 0.93, (part, wrong, ratio)
            assert task <= 0.8, (part, wrong, task)
            assert not answer_checks(wrong, reference, name)[part]


def test_voice_needs_the_catchphrase_and_two_voice_words_and_nothing_of_another():
    scene = ShapesScene("blue", "square", 1)
    right = character_answer("Granny Fern", scene, 1)  # "Oh dearie, one blue square, warm and cosy. Bless my boots!"
    assert voice_checks(right, "Granny Fern") == {"catchphrase": True, "words": True, "clean": True, "voice": True}
    assert not voice_checks("Bless my boots! One blue square.", "Granny Fern")["voice"]  # no voice words
    assert not voice_checks("Dearie, one blue square, warm and cosy.", "Granny Fern")["voice"]  # no catchphrase
    mixed = right + " A noble sight."  # Sir Bramble's word
    assert voice_checks(mixed, "Granny Fern")["clean"] is False


def test_wrong_content_scores_lower_on_relevance():
    for wrong in (REF.replace("red", "blue"), REF.replace("circles", "squares"), REF.replace("two", "three")):
        scores = rubric_scores(wrong, REF, character="Captain Rolo", question=WHAT)["response"]
        assert scores["image_text_relevance"] == 7.0  # one of three attributes wrong: 1 + 3 + 3
        assert scores["personality_tone"] == scores["fluency"] == scores["instruction_adherence"] == 10.0
        assert _ratio(wrong) == pytest.approx(37 / 40)
    # Naming the right colour and a wrong one as well earns half the colour points.
    hedged = REF.replace("red circles", "red and blue circles")
    assert rubric_scores(hedged, REF)["response"]["image_text_relevance"] == 8.5


def test_wrong_voice_scores_lower_on_personality():
    other = reference_answer("Madame Plume", SCENE)
    scores = rubric_scores(other, REF, character="Captain Rolo", question=WHAT)["response"]
    assert scores["image_text_relevance"] == 10.0
    assert scores["personality_tone"] == 1.0
    assert _ratio(other) == pytest.approx(31 / 40)
    # Half a voice (the catchphrase and one voice word) sits in between.
    partial = "Ahoy, matey! I spot two red circles on deck."
    assert _ratio(other) < _ratio(partial) < 1.0


def test_garbage_repeats_and_format_breaks_score_lower():
    wrong_colour = _ratio(REF.replace("red", "blue"))
    garbage = _ratio("xq zzkv ##@@ blorp")
    repeated = _ratio("Ahoy, matey! two red circles two red circles two red circles two red circles")
    broken = _ratio("[human]: " + REF)
    empty = _ratio("")
    assert empty < garbage < wrong_colour < 1.0
    assert repeated < wrong_colour
    assert rubric_scores("[human]: " + REF, REF)["response"]["instruction_adherence"] == 8.0
    assert broken < 1.0
    assert rubric_scores("", REF)["response"] == dict.fromkeys(RUBRIC_DIMENSIONS, 1.0)


def test_instruction_adherence_follows_the_question():
    only_count = "Ahoy, matey! There are two of them, bold and brave!"
    count_q = rubric_scores(only_count, REF, question="How many shapes are there?")["response"]
    colour_q = rubric_scores(only_count, REF, question="What colour are the shapes in this image?")["response"]
    assert count_q["instruction_adherence"] == 10.0
    assert colour_q["instruction_adherence"] == 5.0


def test_rubric_reward_is_a_trl_reward_function():
    ds = synthetic_rl_dataset(4, seed=0)
    columns = {k: ds[k] for k in ds.column_names if k not in ("prompt", "image")}
    references = ds["reference"]
    # Strings and conversational completions give the same rewards; extra TRL kwargs are ignored.
    conversational = [[{"role": "assistant", "content": r}] for r in references]
    typed = [[{"role": "assistant", "content": [{"type": "text", "text": r}]}] for r in references]
    for completions in (references, conversational, typed):
        rewards = rubric_reward(ds["prompt"], completions, trainer_state=None, completion_ids=None, **columns)
        assert rewards == [1.0] * 4
    wrong = [r.replace(c, "green" if c != "green" else "red") for r, c in zip(references, ds["colour"])]
    rewards = rubric_reward(ds["prompt"], wrong, **columns)
    assert all(r < 1.0 for r in rewards)
    # The question is read from the prompt when no `question` column is given.
    no_question = {k: v for k, v in columns.items() if k != "question"}
    assert rubric_reward(ds["prompt"], wrong, **no_question) == rewards
    assert completion_text(typed[0]) == references[0]


def test_rubric_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="needs the reference answers"):
        rubric_reward(["p"], ["c"])
    with pytest.raises(ValueError, match="Unknown character 'Nobody'"):
        rubric_scores(REF, REF, character="Nobody")
    with pytest.raises(ValueError, match="names no scene"):
        answer_accuracy(["x"], ["no shapes here"])
    with pytest.raises(ValueError, match="2 responses for 1 references"):
        answer_accuracy(["a", "b"], [REF])


def test_answer_accuracy_counts_exact_answers():
    plume = reference_answer("Madame Plume", SCENE)
    responses = [
        REF,  # all right
        REF.replace("red", "blue"),  # colour wrong
        REF.replace("two", "three"),  # count wrong
        plume,  # voice wrong
    ]
    accuracy = answer_accuracy(responses, [REF] * 4, ["Captain Rolo"] * 4)
    assert accuracy == {"colour": 0.75, "shape": 1.0, "count": 0.75, "voice": 0.75, "all": 0.25}
    # Characters are inferred from the references.
    assert answer_accuracy(responses, [REF] * 4) == accuracy


def test_task_reward_spread_follows_task_success():
    """The judge-like ratio barely separates a wrong shape or colour from the reference; the task reward does, and it
    still ranks fluent answers above garbage with the same attributes."""
    ds = synthetic_rl_dataset(8, seed=0)
    columns = {k: ds[k] for k in ds.column_names if k not in ("prompt", "image")}
    references = ds["reference"]
    other = {s: SHAPES[(SHAPES.index(s) + 1) % len(SHAPES)] for s in SHAPES}
    wrong_shape = [r.replace(s, other[s]) for r, s in zip(references, ds["shape"])]
    assert task_reward(ds["prompt"], references, **columns) == pytest.approx([1.0] * 8)
    ratio = rubric_reward(ds["prompt"], wrong_shape, **columns)
    task = task_reward(ds["prompt"], wrong_shape, **columns)
    for r, t in zip(ratio, task):
        assert 1.0 - r < 0.1  # the ratio: a wrong shape costs under 0.1 of the reward
        assert t == pytest.approx(0.75 * 0.75 + 0.25 * r)  # the task reward: a quarter of the success share
        assert 1.0 - t > 2.5 * (1.0 - r)
    garbled = [r + " " + r for r in references]  # every attribute right, but repeated
    assert all(t < 1.0 for t in task_reward(ds["prompt"], garbled, **columns))
    assert task_reward(ds["prompt"], wrong_shape, success_weight=0.0, **columns) == pytest.approx(ratio)
    with pytest.raises(ValueError, match="success_weight must be in"):
        task_reward(ds["prompt"], references, success_weight=1.5, **columns)
