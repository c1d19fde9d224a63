"""`experiments.shapes.scenes`: every character's several right answers, the held-out combinations, and drawings that
show what the answers say."""

import re

import numpy as np

from trl_latent.experiments.shapes.reward import parse_scene
from trl_latent.experiments.shapes.scenes import (
    _RGB,
    ALL_CHARACTERS,
    COLOURS,
    HELD_OUT_COMBOS,
    SHAPES,
    ShapesScene,
    all_answers,
    draw_scene,
    paired_combos,
)
from trl_latent.experiments.shapes.task_data import (
    sample_dialogues,
    synthetic_sft_dataset,
)


def test_every_character_has_several_right_answers():
    scene = ShapesScene("green", "square", 3)
    for name in ALL_CHARACTERS:
        answers = all_answers(name, scene)
        assert len(set(answers)) >= 4, name
        # Word order varies: the content words do not always come in the same order or place.
        orders = {
            tuple(w for w in re.findall(r"[a-z]+", a.lower()) if w in ("three", "green", "squares")) for a in answers
        }
        assert len(orders) >= 2, (name, orders)
        assert all(parse_scene(a) == scene for a in answers)
    # Datasets draw among the patterns.
    patterns = {(row["character"], row["pattern"]) for row in synthetic_sft_dataset(64, seed=0)}
    assert {p for _, p in patterns} == {0, 1, 2, 3}


def test_held_out_combos_cover_every_colour_and_shape():
    assert len(HELD_OUT_COMBOS) == 6
    assert {c for c, _ in HELD_OUT_COMBOS} == set(COLOURS)
    assert {s for _, s in HELD_OUT_COMBOS} == set(SHAPES)
    # Every colour and every shape still appears in paired data: only combinations are missing.
    assert {c for c, _ in paired_combos()} == set(COLOURS) and {s for _, s in paired_combos()} == set(SHAPES)


# ------------------------------------------------------------------------------------------ images vs answers
def _components(mask: np.ndarray) -> int:
    seen = np.zeros_like(mask, dtype=bool)
    count = 0
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        count += 1
        stack = [(y, x)]
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
    return count


def test_images_show_what_the_answers_say():
    for sample in sample_dialogues(24, seed=5, image_size=56, max_count=4):
        pixels = np.asarray(sample.image)
        fill = np.all(pixels == _RGB[sample.scene.colour], axis=-1)
        assert fill.sum() > 20, sample
        for colour in COLOURS:
            if colour != sample.scene.colour:
                assert not np.all(pixels == _RGB[colour], axis=-1).any()
        assert _components(fill) == sample.scene.count, sample
        assert parse_scene(sample.answer) == sample.scene
    # Larger images for the paper's size work too.
    big = draw_scene(ShapesScene("blue", "diamond", 3), image_size=(280, 420), seed=0)
    assert big.size == (280, 420) and _components(np.all(np.asarray(big) == _RGB["blue"], axis=-1)) == 3
