import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import textwrap  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny models gain nothing from intra-op threads, and oversubscribed threads are many times slower on a busy
# 2-core machine (measured: 20 SFT steps 5.5 s with 1 thread vs 75 s with 2 under load).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def smollm2_cache(tmp_path_factory):
    """One folder per test process for the converted SmolLM2 base (the conversion takes minutes: see `smollm2`)."""
    return tmp_path_factory.mktemp("smollm2")


@pytest.fixture(scope="session")
def smollm2(smollm2_cache):
    """SmolLM2-135M-Instruct converted once per test process into `smollm2_cache`, whichever test asks first:
    `{"folder": ..., "model": ..., "tokenizer": ...}`, the last two the GGUF-loaded objects the conversion saved
    (tests/experiments/text_roleplay/test_base.py compares the folder with them, then drops them)."""
    from trl_latent.experiments.text_roleplay import base

    loaded = {}
    real_load = base.load_gguf

    def spy(path=None):
        loaded["model"], loaded["tokenizer"] = real_load(path)
        return loaded["model"], loaded["tokenizer"]

    base.load_gguf = spy
    try:
        loaded["folder"] = base.smollm2_path(cache_dir=smollm2_cache)
    finally:
        base.load_gguf = real_load
    return loaded


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """One cache folder per test run for the tiny models (built once, reloaded by every test). Under pytest-xdist the
    workers share it: a build is locked and lands by an atomic rename (`trl_latent.modeling.tiny`), so two workers
    asking for the same model build it once."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker has its own base folder under the run's
        root = root.parent
    folder = root / "tiny_models"
    folder.mkdir(exist_ok=True)
    return folder


# Written beside every launched script as `rank_sampling.py`. Latent rollouts draw their codes from the global torch
# generator, one draw per step for a process's whole batch, so two processes (same seed) and one process with their
# combined batch sample differently; `sample_as_ranks` makes them sample alike, so that a two-process run can be
# compared with a one-process run of the same global batch.
RANK_SAMPLING = textwrap.dedent(
    """
    import torch
    from trl_latent.training import latent_grpo_trainer


    def sample_as_ranks(ranks: int, seed: int = 0) -> None:
        \"\"\"From the first rollout on, `LatentGRPOTrainer` samples each of `ranks` equal slices of a generation batch
        from a random state of its own (all seeded with `seed` at the first rollout), as `ranks` processes each holding
        one slice would (`ranks=1`: the whole batch, as one of several processes does).\"\"\"
        generate = latent_grpo_trainer.latent_generate
        states = []

        def as_ranks(model, input_ids, attention_mask, pixel_values=None, image_grid_thw=None, mm_token_type_ids=None,
                     **kwargs):
            if not states:
                states.extend([torch.Generator().manual_seed(seed).get_state()] * ranks)
            rows = input_ids.shape[0] // ranks
            patches = [0, *image_grid_thw.prod(-1).cumsum(0).tolist()] if image_grid_thw is not None else None
            outs = []
            for rank in range(ranks):
                part = slice(rank * rows, (rank + 1) * rows)
                torch.set_rng_state(states[rank])
                outs.append(
                    generate(
                        model,
                        input_ids[part],
                        attention_mask[part],
                        None if patches is None else pixel_values[patches[part.start] : patches[part.stop]],
                        None if image_grid_thw is None else image_grid_thw[part],
                        None if mm_token_type_ids is None else mm_token_type_ids[part],
                        **kwargs,
                    )
                )
                states[rank] = torch.get_rng_state()
            return _concatenate(outs)

        latent_grpo_trainer.latent_generate = as_ranks


    def _concatenate(outs):
        \"\"\"One `LatentGenerateOutput` of the rows of `outs` (same prompt width), each field zero-padded along its
        step dimension (1; the last for `position_ids`) to the longest completion: padded steps are masked, as the
        trainer pads them itself.\"\"\"
        steps = max(out.completion_ids.shape[1] for out in outs)

        def cat(name, dim=1):
            parts = []
            for out in outs:
                t = getattr(out, name)
                if t is None:
                    return None
                shape = list(t.shape)
                shape[-1 if name == "position_ids" else dim] = steps - out.completion_ids.shape[1]
                parts.append(torch.cat([t, t.new_zeros(shape)], dim=-1 if name == "position_ids" else dim))
            return torch.cat(parts, dim=-2 if name == "position_ids" and parts[0].dim() == 3 else 0)

        return type(outs[0])(**{name: cat(name) for name in outs[0].keys()})  # the fields that are set
    """
)


def _launch_script(script_text: str, tmp_path, script_args, launcher: list[str]) -> list[dict]:
    """Write `script_text` (and `rank_sampling.py`) to `tmp_path`, run it with `launcher` and the folder it writes
    `rank{i}.pt` into as its first argument, and return the records of the ranks that wrote one."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    tmp_path.mkdir(parents=True, exist_ok=True)
    script = tmp_path / "train.py"
    script.write_text(script_text)
    (tmp_path / "rank_sampling.py").write_text(RANK_SAMPLING)
    out = tmp_path / "out"
    out.mkdir()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(root),
    }
    cmd = [sys.executable, *launcher, str(script), str(out), *map(str, script_args)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=540, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return [torch.load(path, weights_only=False) for path in sorted(out.glob("rank*.pt"))]


@pytest.fixture
def launch_two_processes():
    """Run a training script in two processes under `accelerate launch` with one of `examples/accelerate_configs/`;
    the script writes `rank{i}.pt` into the folder it gets as its first argument. Returns both ranks' records."""
    from pathlib import Path

    configs = Path(__file__).resolve().parents[1] / "examples" / "accelerate_configs"

    def launch(config: str, script_text: str, tmp_path: Path, *script_args) -> list[dict]:
        launcher = [
            *("-m", "accelerate.commands.launch", "--config_file", str(configs / config)),
            *("--num_processes", "2", "--mixed_precision", "no", "--main_process_port", "0"),
        ]
        ranks = _launch_script(script_text, tmp_path, script_args, launcher)
        assert len(ranks) == 2
        return ranks

    return launch


@pytest.fixture(scope="session")
def launch_one_process():
    """Run a script written for `launch_two_processes` in one plain process (no `accelerate launch`, no DeepSpeed):
    the reference a two-process run is compared with. Returns its `rank0.pt` record."""

    def launch(script_text: str, tmp_path, *script_args) -> dict:
        (record,) = _launch_script(script_text, tmp_path, script_args, [])
        return record

    return launch


@pytest.fixture(scope="session")
def steerable_latent_model(tiny_cache):
    """Build an untrained latent model on the tiny VLM (16 codes, one-layer IDM and policy, seed 0) whose world model
    follows its codes: the minus-base output with the codebook scaled up (at initialisation the code vectors are ~0.02
    per dimension against base states of ~1 and barely matter), so rollouts and their rewards differ within a group."""
    from tests.fixtures.models import tiny_vlm_path
    from trl_latent.modeling import LatentActionModel

    def build() -> LatentActionModel:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = LatentActionModel.from_base(
                tiny_vlm_path("tiny", cache_dir=tiny_cache),
                codebook_size=16,
                inverse_layers=1,
                policy_layers=1,
                world_output="residual_minus_base",
            )
        with torch.no_grad():
            model.codebook.proj.weight.mul_(100.0)
        return model

    return build


@pytest.fixture(scope="module")
def bad_input_model(tiny_cache):
    """The tiny latent model and processor the bad-input cases that load, save or train a model share, built once per
    test file (`tests/fixtures/bad_input.py`)."""
    from tests.fixtures.bad_input import shared_model

    return shared_model(tiny_cache)


# The evaluation protocol's tests (tests/test_evaluation.py, tests/experiments/shapes/test_evaluate.py)
@pytest.fixture(scope="module")
def eval_set():
    """Four evaluation prompts of the shapes task (seed 3)."""
    from trl_latent.experiments.shapes.task_data import synthetic_rl_dataset

    return synthetic_rl_dataset(4, seed=3, split="eval")


@pytest.fixture(scope="module")
def tiny(tiny_cache):
    """The tiny VLM, no latent modules, and its processor."""
    from tests.fixtures.models import tiny_vlm

    return tiny_vlm("tiny", cache_dir=tiny_cache)


@pytest.fixture(scope="module")
def latent(tiny_cache):
    """An untrained latent model on the tiny VLM (16 codes, one-layer IDM and policy), the same in every run, and its
    processor padding on the left."""
    from transformers import AutoProcessor

    from tests.fixtures.models import tiny_vlm_path
    from trl_latent.modeling import LatentActionModel

    path = tiny_vlm_path("tiny", cache_dir=tiny_cache)
    # The same latent modules in every run, and the caller's random state untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LatentActionModel.from_base(path, codebook_size=16, inverse_layers=1, policy_layers=1)
    processor = AutoProcessor.from_pretrained(path)
    processor.tokenizer.padding_side = "left"
    return model, processor
