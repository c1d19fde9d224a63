"""Tests of `trl_latent.metrics`: `test_<mod>.py` tests `trl_latent/metrics/<mod>.py`."""
