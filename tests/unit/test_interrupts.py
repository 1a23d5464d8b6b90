"""Ctrl-C held for a step (interrupts.deferred): the block finishes, then the interrupt; an
error inside goes on as it is."""

from __future__ import annotations

import os
import signal
import time

import pytest

from smtmigrate import interrupts


def test_ctrl_c_inside_deferred_waits_for_the_block_then_stops():
    done = []
    # what the process started with: default_int_handler, or SIG_IGN when a shell started
    # it in the background (`cmd &` ignores SIGINT): deferred() gives it back either way
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), interrupts.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the signal is handled by now: held, not raised
        done.append("made, and recorded")
    assert done == ["made, and recorded"]
    assert signal.getsignal(signal.SIGINT) is before


def test_an_error_inside_deferred_goes_on_as_it_is():
    with pytest.raises(ZeroDivisionError), interrupts.deferred():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        1 / 0  # noqa: B018
    with interrupts.deferred():  # nothing pressed: nothing raised
        pass
