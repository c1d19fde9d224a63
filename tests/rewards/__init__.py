"""Tests of `trl_latent.rewards`: `test_<mod>.py` tests `trl_latent/rewards/<mod>.py`."""
