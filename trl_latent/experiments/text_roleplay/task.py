"""The text role-play task: a character answers a question about a scene described in words, in its own voice.

It is MMRole's "comment" dialogue made text-only: the scene description stands in for the picture. A **scene** is a
setting (a park, a harbour, a kitchen, ...) with four objects, each a noun of a category (`animal`, `food` or
`thing`) with a colour and a count: "Scene: a sunny park with two brown dogs, a red kite, a yellow duck and a green
bench." The **question** asks one of five things (`KINDS`): an object's colour, an object's count, an animal in the
scene, something to eat in it, or two things the character notices. The **prompt** is the model's chat template with
the character's profile as the system turn ([`~trl_latent.experiments.text_roleplay.characters.system_prompt`]) and the
scene plus the question as the user turn.

**Several right answers.** Any animal of the scene answers the animal question, any food the food question, any two
objects the notice question; the count may be a word or a digit; and the content, the catchphrase and a voice line may
come in any of the four orders of `PATTERNS`, each with its own phrasing. [`all_answers`] lists the answers the task's
own patterns give for a prompt; the reward ([`~trl_latent.experiments.text_roleplay.reward`]) accepts any answer that
names the right content in the character's voice, not only these.

**Splits** (`SPLITS`): `train` (the in-distribution characters on training scenes; task SFT data is drawn only from
it), `heldout` (the same characters on scenes no training prompt shows) and `heldout-characters` (the held-out
characters, whose voices only the general corpus has, on the held-out scenes). A scene belongs to the held-out scenes
by a hash of its content, so no scene is in both.

```python
>>> from trl_latent.experiments.text_roleplay.task import task_prompts
>>> row = task_prompts("heldout", 1, seed=0)[0]
>>> sorted(row)
['character', 'id', 'kind', 'prompt', 'question', 'scene', 'split', 'target']
>>> [m["role"] for m in row["prompt"]]
['system', 'user']
```
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass

from .characters import ALL_CHARACTERS, CHARACTERS, HELD_OUT_CHARACTERS, system_prompt

__all__ = [
    "COLOURS",
    "KINDS",
    "NUMBER_WORDS",
    "OBJECTS",
    "PATTERNS",
    "SETTINGS",
    "SPLITS",
    "Scene",
    "all_answers",
    "answer",
    "make_scene",
    "scene_pool",
    "sft_dataset",
    "task_prompts",
]

COLOURS = ("red", "blue", "green", "yellow", "white", "black", "brown", "purple", "pink", "grey")
NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}
KINDS = ("colour", "count", "animal", "food", "notice")
SPLITS = ("train", "heldout", "heldout-characters")
HELD_OUT_SPLITS = SPLITS[1:]
HELD_OUT_SCENE_SHARE = 5  # one scene in five (by content hash) is held out

# noun -> (plural, category)
OBJECTS: dict[str, tuple[str, str]] = {
    # animals
    "dog": ("dogs", "animal"),
    "duck": ("ducks", "animal"),
    "squirrel": ("squirrels", "animal"),
    "pigeon": ("pigeons", "animal"),
    "seagull": ("seagulls", "animal"),
    "cat": ("cats", "animal"),
    "crab": ("crabs", "animal"),
    "hen": ("hens", "animal"),
    "parrot": ("parrots", "animal"),
    "goldfish": ("goldfish", "animal"),
    "goat": ("goats", "animal"),
    "horse": ("horses", "animal"),
    "owl": ("owls", "animal"),
    "hamster": ("hamsters", "animal"),
    "turtle": ("turtles", "animal"),
    "rabbit": ("rabbits", "animal"),
    # food
    "apple": ("apples", "food"),
    "sandwich": ("sandwiches", "food"),
    "ice cream": ("ice creams", "food"),
    "lemon": ("lemons", "food"),
    "bread roll": ("bread rolls", "food"),
    "pie": ("pies", "food"),
    "carrot": ("carrots", "food"),
    "cheese": ("cheeses", "food"),
    "tomato": ("tomatoes", "food"),
    "cake": ("cakes", "food"),
    "cookie": ("cookies", "food"),
    "melon": ("melons", "food"),
    "muffin": ("muffins", "food"),
    "banana": ("bananas", "food"),
    "plum": ("plums", "food"),
    "pear": ("pears", "food"),
    # things
    "kite": ("kites", "thing"),
    "bench": ("benches", "thing"),
    "balloon": ("balloons", "thing"),
    "bicycle": ("bicycles", "thing"),
    "boat": ("boats", "thing"),
    "rope": ("ropes", "thing"),
    "barrel": ("barrels", "thing"),
    "kettle": ("kettles", "thing"),
    "cup": ("cups", "thing"),
    "basket": ("baskets", "thing"),
    "lantern": ("lanterns", "thing"),
    "umbrella": ("umbrellas", "thing"),
    "drum": ("drums", "thing"),
    "hat": ("hats", "thing"),
    "book": ("books", "thing"),
    "lamp": ("lamps", "thing"),
    "chair": ("chairs", "thing"),
    "sled": ("sleds", "thing"),
    "tent": ("tents", "thing"),
    "flag": ("flags", "thing"),
    "desk": ("desks", "thing"),
    "pencil": ("pencils", "thing"),
    "towel": ("towels", "thing"),
    "bucket": ("buckets", "thing"),
}

# setting -> the objects it may show
SETTINGS: dict[str, tuple[str, ...]] = {
    "a sunny park": (
        "dog",
        "duck",
        "squirrel",
        "pigeon",
        "apple",
        "sandwich",
        "ice cream",
        "kite",
        "bench",
        "balloon",
        "bicycle",
    ),
    "a busy harbour": ("seagull", "cat", "crab", "lemon", "bread roll", "boat", "rope", "barrel", "flag"),
    "a farmhouse kitchen": ("cat", "hen", "pie", "carrot", "cheese", "tomato", "kettle", "cup", "basket"),
    "a night market": ("dog", "parrot", "cake", "cookie", "melon", "plum", "lantern", "umbrella", "drum", "hat"),
    "a quiet library": ("cat", "goldfish", "cookie", "muffin", "book", "lamp", "chair", "cup"),
    "a snowy mountain camp": ("goat", "horse", "owl", "bread roll", "apple", "sled", "tent", "flag", "kettle"),
    "a school classroom": ("hamster", "turtle", "banana", "sandwich", "apple", "desk", "pencil", "book", "chair"),
    "a windy beach": ("crab", "seagull", "dog", "ice cream", "melon", "towel", "bucket", "umbrella", "kite"),
    "a village garden": ("rabbit", "hen", "duck", "pear", "plum", "carrot", "tomato", "basket", "bench", "bucket"),
}

QUESTIONS = {
    "colour": ("What colour is the {noun}?", "What colour are the {plural}?"),
    "count": ("How many {plural} are there?",),
    "animal": ("Which animal do you see here?",),
    "food": ("What is there to eat here?",),
    "notice": ("Name two things you notice.",),
}

# The content part of an answer, by question kind: several phrasings each. `{x}` is an object phrase ("two brown
# dogs"), `{noun}`/`{plural}` the asked object, `{colour}`/`{number}` the asked fact.
CONTENT = {
    "colour": (
        ("The {noun} is {colour}.", "That {noun} looks {colour} to me.", "{Colour}, the {noun} is {colour}."),
        (
            "The {plural} are {colour}.",
            "Those {plural} look {colour} to me.",
            "{Colour}, the {plural} are all {colour}.",
        ),
    ),
    "count": ("I count {number} {plural}.", "There are {number} {plural}.", "{Number} {plural}, no more, no less."),
    "animal": ("I spot {x}.", "There's {x} right there.", "{X} caught my eye."),
    "food": ("You could eat {x}.", "{X} would make a fine snack.", "I'd happily eat {x}."),
    "notice": ("I notice {x} and {y}.", "{X} and {y} stand out.", "First {x}, then {y}."),
}

# Full answers: the content, the catchphrase and one voice line, in four orders.
PATTERNS = (
    "{catchphrase} {content} {line}",
    "{content} {line} {catchphrase}",
    "{line} {content} {catchphrase}",
    "{catchphrase} {line} {content}",
)


@dataclass(frozen=True)
class SceneObject:
    noun: str
    colour: str
    count: int

    @property
    def plural(self) -> str:
        return OBJECTS[self.noun][0]

    @property
    def category(self) -> str:
        return OBJECTS[self.noun][1]

    def phrase(self) -> str:
        """ "a red kite", "an orange ...", "three brown dogs"."""
        if self.count == 1:
            article = "an" if self.colour[0] in "aeiou" else "a"
            return f"{article} {self.colour} {self.noun}"
        return f"{NUMBER_WORDS[self.count]} {self.colour} {self.plural}"


@dataclass(frozen=True)
class Scene:
    setting: str
    objects: tuple[SceneObject, ...]

    def text(self) -> str:
        phrases = [o.phrase() for o in self.objects]
        return f"Scene: {self.setting} with {', '.join(phrases[:-1])} and {phrases[-1]}."

    def key(self) -> str:
        return json.dumps([self.setting, sorted((o.noun, o.colour, o.count) for o in self.objects)])

    def to_json(self) -> str:
        """The scene as the `scene` column holds it (what the reward reads)."""
        return json.dumps(
            {"setting": self.setting, "objects": [[o.noun, o.colour, o.count] for o in self.objects]},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Scene:
        data = json.loads(text)
        return cls(data["setting"], tuple(SceneObject(n, c, k) for n, c, k in data["objects"]))

    def of(self, category: str) -> list[SceneObject]:
        return [o for o in self.objects if o.category == category]

    def find(self, noun: str) -> SceneObject:
        return next(o for o in self.objects if o.noun == noun)


def make_scene(rng: random.Random) -> Scene:
    """A random scene: a setting, one or two animals, one or two foods and things to make four objects, each with its
    own colour and a count of 1-4."""
    setting = rng.choice(sorted(SETTINGS))
    pool = SETTINGS[setting]
    by = {cat: [n for n in pool if OBJECTS[n][1] == cat] for cat in ("animal", "food", "thing")}
    n_animal = rng.randint(1, min(2, len(by["animal"])))
    n_food = rng.randint(1, min(2, len(by["food"])))
    nouns = rng.sample(by["animal"], n_animal) + rng.sample(by["food"], n_food)
    nouns += rng.sample(by["thing"], 4 - len(nouns))
    rng.shuffle(nouns)
    colours = rng.sample(COLOURS, len(nouns))  # every object its own colour: a colour names one object
    counts = [rng.choice((1, 1, 2, 3, 4)) for _ in nouns]
    return Scene(setting, tuple(SceneObject(n, c, k) for n, c, k in zip(nouns, colours, counts)))


def _is_held_out(scene: Scene) -> bool:
    return int(hashlib.sha256(scene.key().encode()).hexdigest(), 16) % HELD_OUT_SCENE_SHARE == 0


def scene_pool(held_out: bool, n: int, seed: int = 0) -> list[Scene]:
    """`n` distinct scenes, all held out (`held_out=True`) or all training scenes; the two pools never share a scene
    (a scene's side is set by a hash of its content, whatever the seed)."""
    rng = random.Random(f"text-roleplay-scenes-{seed}-{held_out}")
    scenes, seen = [], set()
    for _ in range(200 * n + 1000):
        if len(scenes) == n:
            return scenes
        scene = make_scene(rng)
        if _is_held_out(scene) == held_out and scene.key() not in seen:
            seen.add(scene.key())
            scenes.append(scene)
    raise ValueError(f"Could not draw {n} distinct {'held-out' if held_out else 'training'} scenes.")


def _question(kind: str, scene: Scene, rng: random.Random) -> tuple[str, str] | None:
    """`(question, target)` of `kind` about `scene`, or `None` when the scene cannot ask it."""
    if kind == "colour":
        obj = rng.choice(scene.objects)
        template = QUESTIONS["colour"][0 if obj.count == 1 else 1]
        return template.format(noun=obj.noun, plural=obj.plural), obj.noun
    if kind == "count":
        many = [o for o in scene.objects if o.count > 1]
        if not many:
            return None
        obj = rng.choice(many)
        return QUESTIONS["count"][0].format(plural=obj.plural), obj.noun
    return QUESTIONS[kind][0], ""


def _split_characters(split: str) -> list[str]:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return list(HELD_OUT_CHARACTERS if split == "heldout-characters" else CHARACTERS)


def task_prompts(split: str, n: int, seed: int = 0) -> list[dict]:
    """`n` prompts of a split (`SPLITS`), in TRL's conversational prompt format plus the columns the reward reads.

    Each row: `prompt` (system = the character's profile, user = the scene and the question), `character`, `kind`
    (`KINDS`), `scene` (JSON: setting and `[noun, colour, count]` objects), `target` (the asked object's noun for
    colour and count questions, else empty), `question`, `split` and an `id`. Characters take turns; scenes and
    question kinds are drawn from `seed` and the split.
    """
    names = _split_characters(split)
    n_scenes = max(1, n // len(names) + 1) if split == "train" else max(1, n)
    scenes = scene_pool(held_out=split != "train", n=n_scenes, seed=seed)
    rng = random.Random(f"text-roleplay-prompts-{seed}-{split}")
    rows = []
    for i in range(n):
        name = names[i % len(names)]
        scene = scenes[rng.randrange(len(scenes))]
        asked = None
        while asked is None:
            kind = rng.choice(KINDS)
            asked = _question(kind, scene, rng)
        question, target = asked
        rows.append(
            {
                "id": f"{split}-{seed}-{i}",
                "prompt": [
                    {"role": "system", "content": system_prompt(name)},
                    {"role": "user", "content": f"{scene.text()}\n{question}"},
                ],
                "character": name,
                "kind": kind,
                "scene": scene.to_json(),
                "target": target,
                "question": question,
                "split": split,
            }
        )
    return rows


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def _contents(kind: str, scene: Scene, target: str) -> list[str]:
    """Every content sentence the task's phrasings give for a question (all right answers' content parts)."""
    out = []
    if kind in ("colour", "count"):
        obj = scene.find(target)
        templates = CONTENT["colour"][0 if obj.count == 1 else 1] if kind == "colour" else CONTENT["count"]
        for t in templates:
            number = NUMBER_WORDS.get(obj.count, "")
            fields = {"noun": obj.noun, "plural": obj.plural, "colour": obj.colour, "number": number}
            fields |= {"Colour": _capitalise(obj.colour), "Number": _capitalise(number)}
            out.append(t.format(**fields))
        return out
    if kind in ("animal", "food"):
        for obj in scene.of(kind):
            out += [t.format(x=obj.phrase(), X=_capitalise(obj.phrase())) for t in CONTENT[kind]]
        return out
    for a in scene.objects:
        for b in scene.objects:
            if a is not b:
                out += [
                    t.format(x=a.phrase(), X=_capitalise(a.phrase()), y=b.phrase(), Y=_capitalise(b.phrase()))
                    for t in CONTENT["notice"]
                ]
    return out


def all_answers(character: str, kind: str, scene: Scene | str, target: str = "") -> list[str]:
    """Every answer the task's own patterns give: each content phrasing x each voice line x each order."""
    scene = Scene.from_json(scene) if isinstance(scene, str) else scene
    c = ALL_CHARACTERS[character]
    return [
        pattern.format(catchphrase=c["catchphrase"], content=content, line=line)
        for content in _contents(kind, scene, target)
        for line in c["voice_lines"]
        for pattern in PATTERNS
    ]


def answer(row: dict, rng: random.Random) -> str:
    """One answer to a prompt row, drawn from the task's patterns (one content phrasing, voice line and order)."""
    scene = Scene.from_json(row["scene"])
    c = ALL_CHARACTERS[row["character"]]
    content = rng.choice(_contents(row["kind"], scene, row["target"]))
    return rng.choice(PATTERNS).format(
        catchphrase=c["catchphrase"], content=content, line=rng.choice(c["voice_lines"])
    )


def sft_dataset(n: int, seed: int = 0) -> list[dict]:
    """`n` task SFT records, the same for every arm: training prompts (`split="train"`, in-distribution characters
    only) each with one answer drawn from the task's patterns, in TRL's conversational format (`messages`) plus the
    prompt's metadata columns."""
    rng = random.Random(f"text-roleplay-sft-{seed}")
    records = []
    for row in task_prompts("train", n, seed=seed):
        messages = [*row["prompt"], {"role": "assistant", "content": answer(row, rng)}]
        records.append({"messages": messages} | {k: v for k, v in row.items() if k != "prompt"})
    return records
