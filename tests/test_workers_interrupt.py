"""Ctrl-C while the benches wait on their worker pool: never a hang.

``concurrent.futures.wait`` acquires every pending future's lock in turn; a
KeyboardInterrupt raised between two of those acquires left the first lock held,
the pool's thread blocked on it, and the pool's shutdown waiting for that thread for
ever (seen once as a 60 s timeout of the Ctrl-C test of ``bench degradation``).
``run_pool`` only notes the signal and raises KeyboardInterrupt itself, between waits.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from residuals.bench._workers import deferred_interrupts, run_pool

# Ctrl-C delivered at the worst moment: inside wait(), one future's lock taken, not all.
CTRL_C_INSIDE_WAIT = textwrap.dedent(
    """
    import os, signal, time
    from concurrent.futures import ThreadPoolExecutor, _base
    from residuals.bench._workers import run_pool

    sent = []

    def enter(self):
        for i, future in enumerate(self.futures):
            future._condition.acquire()
            if i == 0 and not sent:
                sent.append(1)
                os.kill(os.getpid(), signal.SIGINT)

    _base._AcquireFutures.__enter__ = enter
    done = []
    calls = {i: (time.sleep, (0.01,)) for i in range(50)}
    try:
        run_pool(ThreadPoolExecutor(2), calls, lambda key, result: done.append(key))
    except KeyboardInterrupt:
        print("interrupted", len(done) < 50, flush=True)
    """
)


def test_ctrl_c_inside_wait_stops_the_pool_instead_of_hanging():
    # a subprocess, so that a regression fails this test by its timeout instead of hanging
    done = subprocess.run(
        [sys.executable, "-c", CTRL_C_INSIDE_WAIT], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "interrupted True"


def test_run_pool_hands_over_every_result_and_restores_the_signal_handlers():
    from concurrent.futures import ThreadPoolExecutor

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    got: dict[int, int] = {}
    polls: list[int] = []
    run_pool(
        ThreadPoolExecutor(2),
        {i: (pow, (i, 2)) for i in range(20)},
        got.__setitem__,
        poll=lambda: polls.append(1),
    )
    assert got == {i: i * i for i in range(20)}
    assert polls  # and once more at the end
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_an_interrupt_is_only_noted_inside_the_block():
    with deferred_interrupts() as interrupted:
        assert not interrupted()
        signal.raise_signal(signal.SIGINT)  # would raise KeyboardInterrupt outside
        assert interrupted()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
