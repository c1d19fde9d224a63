"""`data.mmrole_prompts`: the paper's MMRole prompt templates."""

import pytest

from trl_latent.data.mmrole_prompts import PROFILE_FIELDS, TEMPLATES, build_mmrole_prompt, format_history

PROFILE = {field: f"The {field}." for field in PROFILE_FIELDS}


def test_the_paper_prompt_holds_profile_history_and_the_character_cue():
    messages = build_mmrole_prompt("Rolo", PROFILE, "What is that?", history=[("human", "Ahoy"), ("Rolo", "Hi")])
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert user[0]["type"] == "image" and user[1]["type"] == "text"
    text = user[1]["text"]
    assert all(f"The {field}." in text for field in PROFILE_FIELDS)
    assert "[human]: Ahoy\n[Rolo]: Hi" in text and text.rstrip().endswith("[Rolo]:")
    assert format_history([]) == ""


def test_every_template_builds_and_an_unknown_one_is_refused():
    for template in TEMPLATES:
        profile = dict(PROFILE, profile="A pirate.") if template == "mmrole_eval" else PROFILE
        messages = build_mmrole_prompt("Rolo", profile, "What is that?", template=template)
        assert messages[-1]["content"][-1]["text"].strip()
    with pytest.raises((ValueError, KeyError)):
        build_mmrole_prompt("Rolo", PROFILE, "What is that?", template="chatml")
