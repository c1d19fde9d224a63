"""The test suite: `tests/<pkg>/test_<mod>.py` tests `trl_latent/<pkg>/<mod>.py`; `project/` holds the checks of the
project as a whole, `fixtures/` the helpers the test files share."""
