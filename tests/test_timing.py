"""lingrad.timing's thread-count helpers: which cores a run is pinned to, and that pinning
reaches every thread of the process and is undone afterwards."""
import os
import threading

import pytest

from lingrad import timing

needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no affinity call on this OS")


def test_cores_for(monkeypatch):
    monkeypatch.setattr(timing, "allowed_cores", lambda: [2, 3, 5])
    assert timing.cores_for(1) == [2]
    assert timing.cores_for(2) == [2, 3]
    assert timing.cores_for(3) is None  # all of them: no pinning
    assert timing.cores_for(8) is None


def test_xla_flags(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    assert timing.xla_flags(1) == "--xla_cpu_multi_thread_eigen=false"
    assert timing.xla_flags(2) == ""
    monkeypatch.setenv("XLA_FLAGS", "--xla_foo=1")
    assert timing.xla_flags(1) == "--xla_foo=1 --xla_cpu_multi_thread_eigen=false"
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
    assert timing.xla_flags(1) == "--xla_cpu_multi_thread_eigen=true"  # the user's setting wins


@needs_affinity
def test_pinned_reaches_running_threads_and_restores():
    before = os.sched_getaffinity(0)
    if len(before) < 2:
        pytest.skip("this process may use only one core")
    core = min(before)
    started, stop, seen = threading.Event(), threading.Event(), {}

    def worker():
        seen["tid"] = threading.get_native_id()
        started.set()
        stop.wait()

    t = threading.Thread(target=worker)
    t.start()
    started.wait()
    try:
        with timing.pinned([core]):
            assert os.sched_getaffinity(0) == {core}
            assert os.sched_getaffinity(seen["tid"]) == {core}  # a thread started before the block
        assert os.sched_getaffinity(0) == before
        assert os.sched_getaffinity(seen["tid"]) == before
    finally:
        stop.set()
        t.join()


def test_pinned_none_is_a_no_op():
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    with timing.pinned(None):
        pass
    if before is not None:
        assert os.sched_getaffinity(0) == before


def test_short_of_cores():
    assert not timing.short_of_cores(dict(threads=1, cores=[0], cores_after=[0]))
    assert timing.short_of_cores(dict(threads=2, cores=[0, 1], cores_after=[1]))
    assert timing.short_of_cores(dict(threads=2, cores=[1]))
    assert not timing.short_of_cores(dict(threads=2, cores=None, cores_after=None))
