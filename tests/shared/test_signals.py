"""A stop signal that arrives before the event loop's handlers exist is remembered, not fatal."""

from __future__ import annotations

import os
import signal

import pytest

from shared.signals import STOP_SIGNALS, EarlyStop


@pytest.mark.parametrize("sig", STOP_SIGNALS)
def test_early_signal_is_recorded_instead_of_killing(sig: signal.Signals) -> None:
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        early = EarlyStop().install()
        assert early.requested is False
        os.kill(os.getpid(), sig)  # delivered to the main thread before os.kill returns to Python code
        assert early.requested is True
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def test_restore_puts_back_the_previous_handlers() -> None:
    saved = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    try:
        mine = lambda *_: None
        for s in STOP_SIGNALS:
            signal.signal(s, mine)
        early = EarlyStop().install()
        assert all(signal.getsignal(s) == early._note for s in STOP_SIGNALS)
        early.restore()
        assert all(signal.getsignal(s) is mine for s in STOP_SIGNALS)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
