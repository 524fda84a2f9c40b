"""A one-line terminal progress display for Graph.run(progress=True)."""

import sys
import time


class TerminalProgress:
    """Call it with run()'s progress snapshots; it redraws one line on stderr
    (cells done of scheduled, computed, retries, failures, elapsed time)."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.width = 0

    def __call__(self, nodes):
        done = sum(n["done"] for n in nodes)
        scheduled = sum(n["scheduled"] for n in nodes)
        computed = sum(n["computed"] for n in nodes)
        retries = sum(n["retries"] for n in nodes)
        failed = sum(n["failed"] for n in nodes)
        busy = [n["id"] for n in nodes if n["done"] < n["scheduled"]]
        pct = 100.0 * done / scheduled if scheduled else 100.0
        line = (f"cellflow: {done}/{scheduled} cells ({pct:.0f}%), {computed} computed"
                + (f", {retries} retries" if retries else "")
                + (f", {failed} failed" if failed else "")
                + f", {time.monotonic() - self.start:.1f} s"
                + (f" [{', '.join(busy[:3])}]" if busy else ""))
        pad = max(0, self.width - len(line))
        self.width = len(line)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()

    def close(self):
        if self.width:
            self.stream.write("\n")
            self.stream.flush()
