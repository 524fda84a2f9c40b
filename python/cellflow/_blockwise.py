"""Blockwise tasks in daisy's model, on the C++ engine (cellflow::run_blockwise)."""

from . import _cellflow


class Roi:
    """A region: ``offset`` and ``shape`` in voxels (daisy's Roi)."""

    def __init__(self, offset, shape):
        self.offset = tuple(int(x) for x in offset)
        self.shape = tuple(int(x) for x in shape)
        if len(self.offset) != len(self.shape):
            raise ValueError("Roi: offset and shape must have the same length")

    @classmethod
    def from_bounds(cls, begin, end):
        return cls(begin, [e - b for b, e in zip(begin, end)])

    @property
    def begin(self):
        return self.offset

    @property
    def end(self):
        return tuple(o + s for o, s in zip(self.offset, self.shape))

    @property
    def dims(self):
        return len(self.shape)

    def grow(self, before, after=None):
        after = before if after is None else after
        if isinstance(before, int):
            before = (before,) * self.dims
        if isinstance(after, int):
            after = (after,) * self.dims
        return Roi([o - b for o, b in zip(self.offset, before)],
                   [s + b + a for s, b, a in zip(self.shape, before, after)])

    def to_slices(self):
        return tuple(slice(b, e) for b, e in zip(self.begin, self.end))

    def _bounds(self):
        return (list(self.begin), list(self.end))

    def __eq__(self, other):
        return isinstance(other, Roi) and (self.offset, self.shape) == (other.offset, other.shape)

    def __hash__(self):
        return hash((self.offset, self.shape))

    def __repr__(self):
        return f"Roi(offset={self.offset}, shape={self.shape})"


class Block:
    """One block of a task: ``block_id``, ``read_roi``, ``write_roi`` and
    ``index`` (its position in the task's grid of blocks)."""

    __slots__ = ("block_id", "read_roi", "write_roi", "index")

    def __init__(self, block_id, read_roi, write_roi, index):
        self.block_id = block_id
        self.read_roi = read_roi
        self.write_roi = write_roi
        self.index = index

    @classmethod
    def _from_tuple(cls, t):
        bid, (rb, re), (wb, we), index = t
        return cls(bid, Roi.from_bounds(rb, re), Roi.from_bounds(wb, we), tuple(index))

    def __repr__(self):
        return f"Block({self.block_id}, read={self.read_roi}, write={self.write_roi})"


class Task:
    """A blockwise task (daisy.Task's arguments and meaning).

    total_roi: everything blocks may read; read_roi / write_roi: the first
    block's (their difference is the context); process_function(block) does
    the work (raise to fail the attempt; call cellflow.check_cancelled() in
    long loops to honour ``timeout``); check_function(block) -> bool says a
    block is done (skipped before, confirmed after), or, as in daisy, a pair
    (pre_check, post_check): the first asked before a block runs, the second
    after. init_callback_fn() runs once in each worker thread before the
    first block it processes (open a connection, load a model). fit:
    "valid", "overhang" or "shrink"; read_write_conflict, max_retries,
    timeout (seconds per attempt, 0 = none), num_workers, upstream_tasks.
    """

    def __init__(self, task_id, total_roi, read_roi, write_roi, process_function,
                 check_function=None, fit="valid", read_write_conflict=True, max_retries=2,
                 timeout=0.0, num_workers=0, upstream_tasks=(), init_callback_fn=None):
        self.task_id = task_id
        self.total_roi = total_roi
        self.read_roi = read_roi
        self.write_roi = write_roi
        self.process_function = process_function
        self.check_function = check_function
        self.fit = fit
        self.read_write_conflict = read_write_conflict
        self.max_retries = max_retries
        self.timeout = timeout
        self.num_workers = num_workers
        self.upstream_tasks = list(upstream_tasks)
        self.init_callback_fn = init_callback_fn

    def _spec(self):
        process = self.process_function
        check, post_check = self.check_function, None
        if isinstance(check, (tuple, list)):
            if len(check) != 2:
                raise ValueError(f"task {self.task_id!r}: check_function must be a function "
                                 f"or a pair (pre_check, post_check)")
            check, post_check = check

        def as_check(f):
            return None if f is None else (lambda t: bool(f(Block._from_tuple(t))))

        return {
            "name": self.task_id,
            "total_roi": self.total_roi._bounds(),
            "read_roi": self.read_roi._bounds(),
            "write_roi": self.write_roi._bounds(),
            "process": lambda t: process(Block._from_tuple(t)),
            "check": as_check(check),
            "post_check": as_check(post_check),
            "init": self.init_callback_fn,
            "fit": self.fit,
            "read_write_conflict": bool(self.read_write_conflict),
            "max_retries": int(self.max_retries),
            "timeout": float(self.timeout),
            "num_workers": int(self.num_workers),
            "upstream": [u.task_id for u in self.upstream_tasks],
        }

    def blocks(self):
        """The task's blocks in id order, placed per its fit mode."""
        spec = self._spec()
        return [Block._from_tuple(t) for t in _cellflow.enumerate_blocks(spec)]


class BlockwiseReport:
    """What run_blockwise did: ``ok``, and per task (``report[name]``) a dict
    blocks, done, skipped, failed, orphaned, retries, failures (a list of
    (Block, attempts, error) where error holds the Python traceback)."""

    def __init__(self, tasks):
        self.tasks = {}
        for t in tasks:
            t = dict(t)
            t["failures"] = [(Block._from_tuple(b), n, e) for b, n, e in t["failures"]]
            self.tasks[t["name"]] = t

    @property
    def ok(self):
        return all(t["failed"] == 0 and t["orphaned"] == 0 for t in self.tasks.values())

    def __getitem__(self, name):
        return self.tasks[name]

    def __repr__(self):
        lines = [f"{n}: {t['blocks']} blocks, {t['done']} done, {t['skipped']} skipped, "
                 f"{t['failed']} failed, {t['orphaned']} orphaned" for n, t in self.tasks.items()]
        return "<BlockwiseReport " + "; ".join(lines) + ">"


def run_blockwise(tasks):
    """Runs the tasks (and the tasks upstream of them) until every block is
    done, skipped, failed or orphaned, on cellflow's C++ scheduler; returns a
    BlockwiseReport (a failing block never raises; invalid tasks raise
    cellflow.InvalidArgument before anything runs). Ctrl-C stops new blocks
    from starting and raises KeyboardInterrupt."""
    if isinstance(tasks, Task):
        tasks = [tasks]
    everything, seen = [], set()

    def visit(t):
        if id(t) in seen:
            return
        seen.add(id(t))
        for u in t.upstream_tasks:
            visit(u)
        everything.append(t)

    for t in tasks:
        visit(t)
    return BlockwiseReport(_cellflow.run_blockwise([t._spec() for t in everything]))
