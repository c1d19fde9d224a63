"""`rewards.parsing` (reading a judge's scores) and `rewards.rubrics` (what the judge is asked)."""

from trl_latent.rewards.parsing import parse_scores
from trl_latent.rewards.rubrics import MMROLE_RUBRIC, PCOGALIGN_RUBRIC, RUBRICS, conversation_text

DIMS = MMROLE_RUBRIC.dimensions


def test_the_formats_judges_write_are_read():
    assert parse_scores("1. Fluency: clear. [Scores]: (7, 8)", DIMS) == {"fluency": (7.0, 8.0)}
    assert parse_scores("Fluency: fine, A=6, B=9", DIMS) == {"fluency": (6.0, 9.0)}
    assert parse_scores('{"Fluency": [5, 7], "Instruction Adherence": {"A": 8, "B": 8}}', DIMS) == {
        "fluency": (5.0, 7.0),
        "instruction_adherence": (8.0, 8.0),
    }


def test_pairs_outside_the_scale_and_missing_dimensions_do_not_parse():
    assert parse_scores("1. Fluency: [Scores]: (0, 8)", DIMS) == {}  # 0 is below the 1-10 scale
    assert parse_scores("1. Fluency: [Scores]: (-3, 8)", DIMS) == {}  # "-3" is not 3
    assert parse_scores("1. Fluency: [Scores]: (nan, 8)", DIMS) == {}
    assert parse_scores("I cannot judge this.", DIMS) == {}


def test_the_rubrics_build_judge_messages_from_a_row():
    assert set(RUBRICS) == {"mmrole", "pcogalign"} and RUBRICS["pcogalign"] is PCOGALIGN_RUBRIC
    example = MMROLE_RUBRIC.example
    row = {key: example[key] for key in MMROLE_RUBRIC.required_columns}
    messages = MMROLE_RUBRIC.build("user: hi", example["answer"], row)
    assert [m["role"] for m in messages] == ["system", "user"]
    text = messages[1]["content"]
    assert example["answer"] in text and example["reference"] in text and "Captain Rolo" in text
    assert all(d.title in text for d in DIMS) and len(MMROLE_RUBRIC.keys) == len(DIMS) > 3
    assert "[Scores]" in text  # the answer format the parser reads


def test_conversation_text_keeps_text_and_drops_images():
    prompt = [
        {"role": "system", "content": "Be Rolo."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
    ]
    assert conversation_text(prompt) == "system: Be Rolo.\nuser: What is it?"
    assert conversation_text("plain") == "plain"
