"""A fair job queue: round-robin over clients, first-in first-out within a client.

One artist submitting ten jobs does not starve another who submits one: the next job always comes from the client
that has waited longest since it was last served.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Optional


class FairQueue:
    def __init__(self) -> None:
        self._by_client: "OrderedDict[str, deque[str]]" = OrderedDict()  # order = who is served next
        self._cond = threading.Condition()
        self._closed = False

    def put(self, client: str, job_id: str) -> None:
        with self._cond:
            self._by_client.setdefault(client, deque()).append(job_id)
            self._cond.notify()

    def get(self, timeout: Optional[float] = None) -> Optional[str]:
        """The next job id, or None after ``timeout`` seconds or once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or self._by_client, timeout):
                return None
            if self._closed:
                return None
            client, jobs = next(iter(self._by_client.items()))
            job_id = jobs.popleft()
            del self._by_client[client]
            if jobs:  # served: go to the back of the line
                self._by_client[client] = jobs
            return job_id

    def remove(self, job_id: str) -> bool:
        with self._cond:
            for client, jobs in self._by_client.items():
                if job_id in jobs:
                    jobs.remove(job_id)
                    if not jobs:
                        del self._by_client[client]
                    return True
            return False

    def order(self) -> list[str]:
        """Job ids in the order they will run."""
        with self._cond:
            queues = [list(q) for q in self._by_client.values()]
        depth = max((len(q) for q in queues), default=0)
        return [q[i] for i in range(depth) for q in queues if i < len(q)]

    def position(self, job_id: str) -> int:
        order = self.order()
        return order.index(job_id) if job_id in order else 0

    def count(self, client: str) -> int:
        with self._cond:
            return len(self._by_client.get(client, ()))

    def __len__(self) -> int:
        with self._cond:
            return sum(len(q) for q in self._by_client.values())

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
