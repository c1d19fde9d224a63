"""`trl_latent/__init__.py`: the public names, each the object its defining module holds, loaded lazily."""

import pytest


def test_public_api_imports():
    import importlib
    import inspect

    import trl_latent

    assert trl_latent.__all__ == sorted(trl_latent._EXPORTS) and len(trl_latent.__all__) >= 20
    for name in trl_latent.__all__:
        value = getattr(trl_latent, name)
        # The object itself, defined in the module the export names (not the module, not a stand-in of the same name).
        assert inspect.isclass(value) or inspect.isfunction(value), (name, value)
        assert value.__name__ == name and value.__module__ == trl_latent._EXPORTS[name], (name, value)
        assert value is getattr(importlib.import_module(trl_latent._EXPORTS[name]), name), name
    with pytest.raises(AttributeError):
        trl_latent.NotAThing  # noqa: B018


def test_importing_the_package_is_lazy():
    """`import trl_latent` loads none of the training stack: the exports are imported when first used."""
    import subprocess
    import sys

    code = "import sys, trl_latent; print(sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
