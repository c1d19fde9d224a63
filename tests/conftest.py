import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny models gain nothing from intra-op threads, and oversubscribed threads are many times slower on a busy
# 2-core machine (measured: 20 SFT steps 5.5 s with 1 thread vs 75 s with 2 under load).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """One cache folder per test session for the tiny models (built once, reloaded by every test)."""
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture
def launch_two_processes():
    """Run a training script in two processes under `accelerate launch` with one of `examples/accelerate_configs/`;
    the script writes `rank{i}.pt` into the folder it gets as its first argument. Returns both ranks' records."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def launch(config: str, script_text: str, tmp_path: Path, *script_args) -> list[dict]:
        tmp_path.mkdir(parents=True, exist_ok=True)
        script = tmp_path / "train.py"
        script.write_text(script_text)
        out = tmp_path / "out"
        out.mkdir()
        cmd = [
            *(sys.executable, "-m", "accelerate.commands.launch"),
            *("--config_file", str(root / "examples" / "accelerate_configs" / config)),
            *("--num_processes", "2", "--mixed_precision", "no", "--main_process_port", "0"),
            *(str(script), str(out), *map(str, script_args)),
        ]
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(root),
        }
        result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=540, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
        return [torch.load(out / f"rank{i}.pt", weights_only=False) for i in range(2)]

    return launch


@pytest.fixture(scope="session")
def steerable_latent_model(tiny_cache):
    """Build an untrained latent model on the tiny VLM (16 codes, one-layer IDM and policy, seed 0) whose world model
    follows its codes: the minus-base output with the codebook scaled up (at initialisation the code vectors are ~0.02
    per dimension against base states of ~1 and barely matter), so rollouts and their rewards differ within a group."""
    from trl_latent.experiments.models import tiny_vlm_path
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
