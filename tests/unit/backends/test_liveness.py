"""Beats and how they are judged: by the interval the beating process recorded, never by the reader's own."""

from __future__ import annotations

import os
import time

from merlin_mdm.backends.celery.liveness import Beating, beat_seconds, is_silent, silent_units
from merlin_mdm.study.plan import UnitKey


def test_a_beat_is_silent_after_six_of_its_own_intervals() -> None:
    assert not is_silent("100.0 5", 100.0 + 30)
    assert is_silent("100.0 5", 100.0 + 30.1)
    assert not is_silent("100.0 60", 100.0 + 300)  # a worker that beats every minute is judged by its minute
    assert is_silent(b"100.0 0.5", 103.1)
    assert is_silent("100.0", 130.1) and not is_silent("100.0", 129.9)  # the first beat, at the unit's start
    assert not is_silent("", 1e12) and not is_silent(None, 1e12)  # never beat: not judged


def test_silent_units_are_listed_in_plan_order() -> None:
    beats = {UnitKey(1, 0): "0 5", UnitKey(0, 3): "0 5", UnitKey(0, 1): "95 5", UnitKey(2, 0): ""}
    assert silent_units(beats, 100.0) == [UnitKey(0, 3), UnitKey(1, 0)]


def test_the_interval_comes_from_the_environment() -> None:
    assert beat_seconds({}) == 5.0
    assert beat_seconds({"MERLIN_MDM_HEARTBEAT": "0.5"}) == 0.5
    assert beat_seconds({"MERLIN_MDM_HEARTBEAT": "abc"}) == 5.0 and beat_seconds({"MERLIN_MDM_HEARTBEAT": "0"}) == 5.0


def test_beating_beats_at_once_then_every_interval_until_closed_and_survives_a_failing_beat() -> None:
    times: list[float] = []

    def beat() -> None:
        times.append(time.monotonic())
        if len(times) == 2:
            raise ConnectionError("the server restarts")

    beating = Beating(beat, 0.05)
    deadline = time.monotonic() + 5
    while len(times) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    beating.close()
    seen = len(times)
    time.sleep(0.2)
    assert seen >= 4 and len(times) <= seen + 1  # went on after the failure; stopped once closed


def test_a_beat_names_its_process_and_a_process_that_ended_is_silent_at_once() -> None:
    """On the beat's own machine an ended process is seen at once; from another machine the beat only ages."""
    import socket
    import subprocess

    from merlin_mdm.backends.celery.liveness import process_gone, process_token

    me = process_token()
    assert me.startswith(f"{socket.gethostname()}/{os.getpid()}/") and not process_gone(me)
    assert not is_silent(f"100.0 5 {me}", 110.0)
    child = subprocess.Popen(["sleep", "30"])
    token = process_token(child.pid)
    assert not process_gone(token)
    child.kill()
    child.wait()
    assert process_gone(token) and is_silent(f"100.0 5 {token}", 101.0)  # ended: silent with a fresh beat
    machine, pid, start = me.split("/")
    assert process_gone(f"{machine}/{pid}/{int(start) + 1}")  # the pid now names another process
    assert not process_gone(f"elsewhere-{machine}/{child.pid}/{start}")  # another machine's: not known here
    assert not is_silent(f"100.0 5 elsewhere-{machine}/{child.pid}/{start}", 110.0)
    assert not process_gone("") and not process_gone("garbage")


def test_a_zombie_has_ended() -> None:
    import subprocess

    from merlin_mdm.backends.celery.liveness import process_gone, process_token

    child = subprocess.Popen(["true"])
    token = process_token(child.pid)
    for _ in range(200):  # until it exits; it stays a zombie, unreaped, until wait()
        if process_gone(token):
            break
        time.sleep(0.01)
    assert process_gone(token) and child.poll() == 0
