"""`rewards.rubrics`: what the judge is asked."""

from trl_latent.rewards.rubrics import MMROLE_RUBRIC, PCOGALIGN_RUBRIC, RUBRICS, conversation_text

DIMS = MMROLE_RUBRIC.dimensions


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
