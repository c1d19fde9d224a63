"""A disk cache of the saved models that several runs share (the pretrained base of a seed, the token SFT model,
each latent stage), keyed by what determines them, so a grid of RL runs builds each prefix once.

A phase asks for its entry; unless `entry.result` says the prefix is already there, it builds into
`entry.build_dir` and calls `entry.finish(result)`, which stores `result.json` with the model and moves the folder
into place in one rename: an interrupted build leaves only a temporary folder and is rebuilt next time, and several
processes may share one cache.

The key of a phase is the `PipelineConfig` fields that can change that phase's result, read from each field's `reads`
metadata (`PHASE_READS`; a field without it is an error, so a new option can never be left out of a key), plus the
cache's `tag` (the study puts the code fingerprint and library versions there).

```
cache = PrefixCache("outputs/study/prefix", tag="v1")
entry = cache.entry("token_sft", PipelineConfig.quick())
if entry.result is None:
    ...  # train, save the model into entry.build_dir
    entry.finish({"loss_last": 1.0})  # now the model is at entry.path
```
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any

from ...training.stages import PRETRAIN_STAGE_NAMES

# What each cached phase's result depends on, as the `reads` tags of the config's fields (`PipelineConfig` declares, per
# field, which parts of the job it can change). Every prefix result holds an evaluation except the latent stages 1-4.
PHASE_READS = {
    "base": ("base", "eval"),
    "token_sft": ("base", "task_sft", "eval"),
    # Token SFT with the text-only corpus mixed in (the more-data baseline): its size is a latent-stage field.
    "token_sft_text": ("base", "task_sft", "latent", "eval"),
    **{f"latent/{stage}": ("base", "latent") for stage in PRETRAIN_STAGE_NAMES},
    "latent/world_sft": ("base", "latent", "task_sft", "world_sft"),
    "latent/eval_world_sft": ("base", "latent", "task_sft", "world_sft", "eval"),
}

RESULT_FILE = "result.json"


def phase_fields(phase: str, config) -> list[str]:
    """The fields of `config` that can change the result a phase saves: those whose `reads` metadata meets the
    phase's. A field that declares no `reads` is an error, so a new option can never be left out of a key by
    accident."""
    if phase not in PHASE_READS:
        raise ValueError(f"Unknown prefix phase {phase!r}: expected one of {sorted(PHASE_READS)}.")
    names = []
    for spec in fields(config):
        if "reads" not in spec.metadata:
            raise ValueError(
                f"{type(config).__name__}.{spec.name} declares no `reads` metadata: say which parts of the job it "
                "can change (pipeline.option(..., reads=...)) so the prefix cache keys it right."
            )
        if set(spec.metadata["reads"]) & set(PHASE_READS[phase]):
            names.append(spec.name)
    return names


def write_json_atomic(path: str | Path, value: Any) -> None:
    """Write `value` as JSON to `path` through a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str) + "\n")
    os.replace(tmp, path)


class PrefixEntry:
    """Where a phase saves its model, and the phase's result once finished (`None` until then).

    A phase builds into `build_dir` and calls `finish(result)`; then its model is at `path`. Cached entries build in a
    private temporary folder that `finish` renames to `path` in one step, so processes sharing a cache never see half
    a model: when two build the same prefix at once, the first rename wins and the other's copy is dropped.
    Uncached entries (`cached=False`) build straight into `path` and always build.
    """

    def __init__(self, path: str | Path, key: dict | None = None, cached: bool = True):
        self.path = Path(path)
        self.key = json.loads(json.dumps(key, sort_keys=True, default=str))  # as stored: tuples become lists
        self.cached = cached
        self.result: dict | None = self._read() if cached else None
        self.reused = self.result is not None
        if cached and self.result is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.build_dir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
            self.build_dir.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
        else:
            self.build_dir = self.path

    def _read(self) -> dict | None:
        result_file = self.path / RESULT_FILE
        if not result_file.exists():
            return None
        try:
            saved = json.loads(result_file.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(
                f"The cached prefix {result_file} is not valid JSON ({err}); delete the folder {self.path} and rerun "
                f"to rebuild it."
            ) from err
        if saved.get("key") != self.key:
            raise ValueError(
                f"The cached prefix {self.path} holds a different key than it is filed under (a copied or edited "
                f"folder?); delete it and rerun to rebuild it."
            )
        return saved["result"]

    def finish(self, result: dict) -> None:
        """Mark the phase done: its model was saved in `build_dir`; afterwards it is at `path`."""
        if not self.cached:
            self.result = result
            return
        write_json_atomic(self.build_dir / RESULT_FILE, {"key": self.key, "result": result})
        try:
            os.rename(self.build_dir, self.path)
            self.result = result
        except OSError:  # another process finished the same prefix first: use theirs
            shutil.rmtree(self.build_dir, ignore_errors=True)
            self.result = self._read()
            if self.result is None:
                raise
        self.build_dir = self.path


class PrefixCache:
    """Saved prefixes under `root/<phase>/<digest of the key>/`.

    Args:
        root (`str` or `Path`): the cache folder.
        tag (`str`, *optional*): part of every key (code fingerprint, library versions, evaluation protocol).
    """

    def __init__(self, root: str | Path, tag: str = ""):
        self.root = Path(root)
        self.tag = tag

    def key(self, phase: str, config) -> dict:
        return {
            "phase": phase,
            "tag": self.tag,
            "config": {k: getattr(config, k) for k in sorted(phase_fields(phase, config))},
        }

    def entry(self, phase: str, config) -> PrefixEntry:
        """The entry of `phase` for `config`: finished (`entry.result` set) or ready to build."""
        key = self.key(phase, config)
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return PrefixEntry(self.root / phase.replace("/", "-") / digest, key)


def prefix_entry(cache: PrefixCache | None, phase: str, config, default_dir: str | Path) -> PrefixEntry:
    """`cache.entry(phase, config)`, or without a cache an entry at `default_dir` that always builds."""
    if cache is None:
        return PrefixEntry(default_dir, cached=False)
    return cache.entry(phase, config)
