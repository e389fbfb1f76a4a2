"""The local fleet (``kalshi-data demo``) as a library: plan it, start it, poke it, stop it.

Public names: :func:`make_plan`, :class:`FleetPlan`, :class:`Fleet`, :class:`FleetError`,
:func:`find_leftovers`, :func:`load_fleet_file`. See ``fleet.py`` for an in-process example.
"""

from kalshi_data.fleet.errors import FleetError
from kalshi_data.fleet.fleet import Fleet
from kalshi_data.fleet.info import load_fleet_file
from kalshi_data.fleet.plan import FleetPlan, make_plan
from kalshi_data.fleet.processes import find_leftovers

__all__ = ["Fleet", "FleetError", "FleetPlan", "find_leftovers", "load_fleet_file", "make_plan"]
