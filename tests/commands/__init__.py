"""Tests of `trl_latent.commands`: `test_<mod>.py` tests `trl_latent/commands/<mod>.py`."""
