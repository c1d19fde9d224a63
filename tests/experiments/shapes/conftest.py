"""Fixtures the test files of `trl_latent.experiments.shapes` share: the task written small, once per test file."""

import pytest

from tests.fixtures.tasks import SMALL
from trl_latent.experiments.shapes.task_data import write_synthetic_task


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes") / "task"
    return root, write_synthetic_task(root, seed=0, max_count=4, **SMALL)
