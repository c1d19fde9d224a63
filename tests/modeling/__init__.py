"""Tests of `trl_latent.modeling`: `test_<mod>.py` tests `trl_latent/modeling/<mod>.py`."""
