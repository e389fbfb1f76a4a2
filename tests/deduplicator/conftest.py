"""The deduplicator suite runs on both gatherer storage engines: every test that reaches a
database through ``pg_cluster`` (tests/fix_db.py) runs once against native-partition gatherers and
once against TimescaleDB gatherers (production is the same native schema in both)."""

from tests.fix_db import both_storages

pytest_generate_tests = both_storages
