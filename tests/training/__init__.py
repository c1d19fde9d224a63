"""Tests of `trl_latent.training`: `test_<mod>.py` tests `trl_latent/training/<mod>.py`."""
