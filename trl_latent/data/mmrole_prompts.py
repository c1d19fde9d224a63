"""MMRole's two prompts: the paper's (docs/architecture.md section 5) and MMRole's own evaluation prompt, as its released
test records are built (`tests/data/mmrole-sample/eval-example/`). Re-exported by [`trl_latent.data.mmrole`]."""

from __future__ import annotations

from collections.abc import Sequence

PROFILE_FIELDS = ("introduction", "personality", "experience", "relationship", "catchphrase")
HUMAN = "human"
# Labels of the profile fields in the paper's prompt (code), in this order.
PROFILE_LABELS = {
    "introduction": "Introduction",
    "personality": "Personality",
    "experience": "Experience",
    "relationship": "Relationship",
    "catchphrase": "Catchphrase",
}
# Section titles of MMRole's own evaluation prompt (`mmrole-sample/eval-example/`), same field order.
MMROLE_EVAL_SECTIONS = {
    "introduction": "Brief Introduction",
    "personality": "Personality",
    "experience": "Life Story",
    "relationship": "Main Interpersonal Relationships",
    "catchphrase": "Catchphrases",
}
TEMPLATES = ("paper", "mmrole_eval")

# The paper's prompt (docs/architecture.md section 5): a system message, then one user turn with the image and this text.
PAPER_SYSTEM_PROMPT = (
    "Please embody the given character and respond to the human user in a manner consistent with the character's "
    "traits, voice, and perspective."
)
# The opening sentence is MMRole's own (see `eval-example/`); the rest follows the order of the paper's template.
PAPER_USER_TEMPLATE = (
    "Please step into the shoes of {name}. Imagine you are talking with a curious human about the given image. "
    "This requires a deep understanding of the character's background, including their personality, experiences, "
    "abilities, and relationships.\n\n"
    "The auxiliary information about {name} is as follows:\n{profile}\n\n"
    "The conversation history between {name} and the curious human is as follows:\n{history}\n\n"
    "Please embody the given character of {name} and complete the following conversation.\n"
    "[{question_speaker}]: {question}\n"
    "[{name}]: "
)
# MMRole's evaluation prompt, as in the released test record (`eval-example/comment_test_example.json`).
MMROLE_EVAL_SYSTEM_PROMPT = (
    "You are a dedicated role-playing assistant designed to immerse yourself fully in the character you are "
    "portraying."
)
MMROLE_EVAL_USER_TEMPLATE = (
    "Please step into the shoes of {name}{from_script}. Imagine you are talking with a curious human about the given "
    "image. This requires a deep understanding of the character's background, including their personality, "
    "experiences, abilities, and relationships.\n\n\n"
    "The description of {name} is as follows:\n{profile}\n\n\n"
    "{history}"
    "Please respond to the following words of the curious human about the image in English using the distinctive "
    "tone, manner and vocabulary of {name}:\n{question}"
)


def user_content(text: str) -> list[dict]:
    """A user turn's content: the image placeholder TRL fills from the `image` column, then the text."""
    return [{"type": "image", "text": None}, {"type": "text", "text": text}]


def text_content(text: str) -> list[dict]:
    return [{"type": "text", "text": text}]


def format_history(turns: Sequence[tuple[str, str]]) -> str:
    """Conversation history as `[speaker]: text` lines (empty for comment dialogues)."""
    return "\n".join(f"[{speaker}]: {text}" for speaker, text in turns)


def build_mmrole_prompt(
    name: str,
    profile: dict[str, str],
    question: str,
    history: Sequence[tuple[str, str]] = (),
    template: str = "paper",
    question_speaker: str = HUMAN,
    script: str | None = None,
    system_prompt: str | None = None,
) -> list[dict]:
    """The prompt conversation of one sample: a system message and a user turn holding the image and the text.

    Args:
        name (`str`):
            The character's display name.
        profile (`dict[str, str]` or `str`):
            The five profile fields; for `"mmrole_eval"` also the character's short profile text as released in
            `profiles/<split>/profiles.json`, used verbatim (as MMRole's evaluation records do).
        question (`str`):
            The last turn before the character's answer.
        history (`Sequence[tuple[str, str]]`, *optional*, defaults to `()`):
            Earlier `(speaker, text)` turns.
        template (`str`, *optional*, defaults to `"paper"`):
            `"paper"`: the paper's prompt (docs/architecture.md section 5), ending with `[<name>]: `. `"mmrole_eval"`: MMRole's
            own evaluation prompt (markdown profile sections, `eval-example/`).
        question_speaker (`str`, *optional*, defaults to `"human"`):
            Who asked `question` (another character in inter-role dialogues).
        script (`str`, *optional*):
            The work the character comes from, used by the `"mmrole_eval"` template ("... of Iron Man from The
            Avengers"; MMRole takes it from `roles.json`).
        system_prompt (`str`, *optional*):
            Replaces the template's system message.
    """
    if isinstance(profile, str) and template != "mmrole_eval":
        raise ValueError("A profile text (not the five fields) can only be used with template='mmrole_eval'.")
    if template == "paper":
        text = PAPER_USER_TEMPLATE.format(
            name=name,
            profile="\n".join(f"- {PROFILE_LABELS[key]}: {profile[key]}" for key in PROFILE_FIELDS),
            history=format_history(history),
            question_speaker=question_speaker,
            question=question,
        )
        system = PAPER_SYSTEM_PROMPT
    elif template == "mmrole_eval":
        history_text = f"The conversation so far:\n{format_history(history)}\n\n\n" if history else ""
        text = MMROLE_EVAL_USER_TEMPLATE.format(
            name=name,
            from_script=f" from {script}" if script else "",
            profile=(
                profile
                if isinstance(profile, str)
                else "\n".join(f"### {MMROLE_EVAL_SECTIONS[key]}\n{profile[key]}" for key in PROFILE_FIELDS)
            ),
            history=history_text,
            question=question,
        )
        system = MMROLE_EVAL_SYSTEM_PROMPT
    else:
        raise ValueError(f"Unknown MMRole prompt template {template!r}; choose from {TEMPLATES}.")
    return [
        {"role": "system", "content": text_content(system_prompt if system_prompt is not None else system)},
        {"role": "user", "content": user_content(text)},
    ]
