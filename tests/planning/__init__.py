"""Tests of `trl_latent.planning`: `test_<mod>.py` tests `trl_latent/planning/<mod>.py`."""
