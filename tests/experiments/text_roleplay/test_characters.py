"""`experiments.text_roleplay.characters`: a character's profile names its catchphrase and only its tone words."""

from tests.fixtures.text import words
from trl_latent.experiments.text_roleplay.characters import CHARACTERS, HELD_OUT_CHARACTERS, TONE_WORDS, system_prompt


def test_profile_names_the_catchphrase_and_only_the_tone_words():
    for name, c in {**CHARACTERS, **HELD_OUT_CHARACTERS}.items():
        prompt = system_prompt(name)
        assert c["catchphrase"] in prompt
        named = [w for w in c["voice_words"] if w in words(prompt)]
        assert named == list(c["voice_words"][:TONE_WORDS]), (name, named)
