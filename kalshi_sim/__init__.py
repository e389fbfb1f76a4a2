"""kalshi_sim: a local, faithful, deterministic Kalshi exchange for tests and the demo.

Public surface: :class:`Simulator` (in-process handle), :class:`SimThread` (same, on its own
event-loop thread), :class:`SimConfig`, and the key helpers. Importing has no side effects.
"""

from .auth import auth_headers, keygen, sign
from .config import SimConfig
from .server import SimThread, Simulator, StartError

__all__ = ["SimConfig", "SimThread", "Simulator", "StartError", "auth_headers", "keygen", "sign"]
