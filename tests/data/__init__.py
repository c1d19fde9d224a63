"""Tests of `trl_latent.data`: `test_<mod>.py` tests `trl_latent/data/<mod>.py`."""
