"""``kalshi-data demo``: the sub-command entry; the fleet itself lives in ``kalshi_data/fleet/``."""

from kalshi_data.fleet.demo import add_parser, run

__all__ = ["add_parser", "run"]
