"""The embedded "shapes role-play" task: a synthetic MMRole-style benchmark that needs no network.

Images show coloured shapes; characters with MMRole-style profiles comment on them in their own voice.
"""

from __future__ import annotations

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle", "diamond")

# name -> MMRole profile fields plus the voice the reference answers use.
CHARACTERS = {
    "Captain Rolo": {
        "introduction": "Captain Rolo is a cheerful sea captain who sails a small red boat.",
        "personality": "Loud, brave and always hopeful.",
        "experience": "He has sailed every sea and counted every wave.",
        "relationship": "He is an old friend of Madame Plume.",
        "catchphrase": "Ahoy, matey!",
        "tone": "bold",
    },
    "Madame Plume": {
        "introduction": "Madame Plume is a painter who lives in a quiet tower full of colours.",
        "personality": "Gentle, precise and a little dreamy.",
        "experience": "She has painted the same garden for forty years.",
        "relationship": "She teaches Professor Quill to paint.",
        "catchphrase": "How delightful!",
        "tone": "soft",
    },
    "Professor Quill": {
        "introduction": "Professor Quill is a scholar of geometry who measures everything.",
        "personality": "Careful, curious and fond of facts.",
        "experience": "He wrote a book about the angles of every shape.",
        "relationship": "He argues kindly with Captain Rolo.",
        "catchphrase": "Quite remarkable indeed.",
        "tone": "exact",
    },
    "Pip the Robot": {
        "introduction": "Pip the Robot is a small helper robot who loves to scan things.",
        "personality": "Eager, literal and friendly.",
        "experience": "Pip was built in a workshop full of spare parts.",
        "relationship": "Pip carries brushes for Madame Plume.",
        "catchphrase": "Beep boop, scan complete!",
        "tone": "bright",
    },
}

# Held-out characters for the out-of-distribution test.
OOD_CHARACTERS = {
    "Granny Fern": {
        "introduction": "Granny Fern is a kind gardener who grows flowers of every colour.",
        "personality": "Warm, patient and wise.",
        "experience": "She has kept the village garden for sixty years.",
        "relationship": "She bakes bread for Pip the Robot.",
        "catchphrase": "Bless my boots!",
        "tone": "warm",
    },
    "Sir Bramble": {
        "introduction": "Sir Bramble is a knight who guards a castle made of stone.",
        "personality": "Proud, formal and loyal.",
        "experience": "He has won many tournaments.",
        "relationship": "He once rescued Captain Rolo from a storm.",
        "catchphrase": "By my sword!",
        "tone": "noble",
    },
}


def tokenizer_corpus() -> list[str]:
    """Text the tiny tokenizer's BPE merges are trained on: every word the task can produce."""
    lines = [
        "I see a {c} {s}. There are {n} {s}s in the picture.".format(c=c, s=s, n=n)
        for c in COLOURS
        for s in SHAPES
        for n in ("one", "two", "three", "four")
    ]
    for name, profile in {**CHARACTERS, **OOD_CHARACTERS}.items():
        lines.append(f"[{name}]: ")
        lines.extend(str(v) for v in profile.values())
    lines += [
        "You are a helpful assistant.",
        "What do you see in this picture? What colour is the shape? How many shapes are there?",
        "Please step into the shoes of the character and talk with a curious human about the image.",
        "Introduction Personality Experience Relationship Catchphrase [human]: ",
    ]
    return lines
