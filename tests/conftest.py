"""Fixture plugins for the whole suite (see each module's docstring)."""

pytest_plugins = ["tests.fix_db", "tests.fix_sim", "tests.fix_aws"]
