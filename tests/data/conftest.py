"""Fixtures the test files of `trl_latent.data` share: the synthetic task written small."""

import pytest

from trl_latent.experiments.shapes.task_data import write_synthetic_task


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    return write_synthetic_task(root, n_paired=8, n_text_only=12, sessions_per_file=1, ood_sessions_per_character=1)
