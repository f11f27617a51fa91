"""The coordinator: the one process that owns the results database.

It consumes two queues: ``dtf.coordinator`` (submits, status queries, worker heartbeats,
test-started notices) and ``dtf.results`` (test results). Results are ingested in
batches: up to N messages or T ms (or at once when the batch holds every result still
outstanding), one DuckDB transaction, then the whole batch is acked in one round trip, so
a crash before the ack redelivers and the (run, test, attempt) key makes the second write
a no-op. After each batch it publishes the tests whose dependencies have now passed, a
bounded window per hardware queue at a time. A submit is stored chunk by chunk as it
arrives; status queries may be held until their run finishes.

In a high-availability group every `dtf coordinator` is a ``Candidate``: it stands by until
it holds the leader lease (dtf.ha.LeaderLock), and only then opens the DuckDB file
read-write and consumes the two queues. A new leader restores the running runs from DuckDB
and reconciles: ready tests that were never published are published, and tests that went
silent are published again. On losing the lease, or on a write refused by the fence, it
stops consuming, closes the file and stands by again.

The package: ``loop.py`` (the kombu connection and where each message goes) apart from the
policies, each in a module named for it: ``submits.py``, ``results.py`` (batching and the
commit), ``queries.py``, ``liveness.py`` (heartbeats, started notices, restore and
reconcile), ``dispatch.py``; ``state.py`` is what they share, ``candidate.py`` the HA loop.
"""

from __future__ import annotations

from .candidate import Candidate
from .liveness import RECONCILE_EVERY_S
from .loop import Coordinator
from .queries import MAX_STATUS_WAIT_S
from .state import WORKER_OFFLINE_AFTER_S
from .submits import STALE_SUBMIT_AFTER_S

__all__ = ["Candidate", "Coordinator", "WORKER_OFFLINE_AFTER_S", "RECONCILE_EVERY_S", "STALE_SUBMIT_AFTER_S",
           "MAX_STATUS_WAIT_S"]
