"""The garbage collector's pauses: freeze what a node holds once it has started.

CPython's full collections walk every container the process holds. A started node holds a few hundred thousand of
them that live as long as it does (the modules of aiohttp, cryptography, pysyncobj, prometheus_client... and their
functions and classes), and walking them took 13 to 50 ms of every full collection here, on the Raft thread or the
loop, whichever allocated last: a commit or a request stood still that long now and then. `gc.freeze()` moves them to
the permanent generation (the technique Instagram's servers use), so full collections walk only what came later, and
a forked snapshot writer does not touch their pages either. Frozen objects are still freed by reference counting;
only a reference cycle among them would never be collected, so the collector runs once just before.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger("podnode")


def freeze_startup_heap() -> int:
    """Collect, then freeze everything alive; the number of objects frozen."""
    start = time.perf_counter()
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("garbage collector: %d objects of the started node frozen (%.0f ms); full collections walk only newer "
             "ones", frozen, (time.perf_counter() - start) * 1000)
    return frozen
