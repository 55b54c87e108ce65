"""Wall time, peak resident memory and a heartbeat for each phase of a run."""

import contextlib
import resource
import sys
import threading
import time

GIB = 2**30


class Phases:
    """Times phases; a thread samples RSS every `interval` s and prints a
    line every `heartbeat` s while a phase runs, so no phase is silent for
    longer than that.

    Each phase's peak is the sampled maximum, raised to the process's
    lifetime `ru_maxrss` when that grew during the phase (a spike between
    two samples)."""

    def __init__(self, heartbeat=10.0, interval=0.05, stream=sys.stderr):
        self.heartbeat, self.interval, self.stream = heartbeat, interval, stream
        self.results = {}

    @contextlib.contextmanager
    def __call__(self, name):
        start = time.perf_counter()
        lifetime = _max_rss()
        peak = [current_rss()]
        done = threading.Event()

        def watch():
            last = start
            while not done.wait(self.interval):
                rss = current_rss()
                peak[0] = max(peak[0], rss)
                now = time.perf_counter()
                if now - last >= self.heartbeat:
                    last = now
                    print(f"[{name}] {now - start:,.0f} s, RSS {rss / GIB:.2f} GiB",
                          file=self.stream, flush=True)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            seconds = time.perf_counter() - start
            grown = _max_rss()
            high = max(peak[0], current_rss(),
                       grown if grown > lifetime else 0)
            self.results[name] = {"seconds": seconds, "peak_rss_bytes": int(high)}
            print(f"[{name}] done in {seconds:,.1f} s, peak RSS {high / GIB:.2f} GiB",
                  file=self.stream, flush=True)


def current_rss():
    """This process's resident bytes now (Linux /proc; else its peak so far)."""
    try:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * resource.getpagesize()
    except OSError:
        return _max_rss()


def _max_rss():
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024
