"""What one peer may cost the server per second: token buckets of messages and bytes, per peer, bounded in number.

The serve thread charges every incoming message to its peer (the CURVE key, else the routing id) before any parsing.
A peer over its budget gets a cheap ``rate_limited`` error instead of service, so a flood from one client costs the
others nothing but its share of the receive loop (libzmq already reads the peers in turn). Refused messages are not
charged: a client that backs off for the advised time is served again at once.

Buckets refill continuously (``rate`` per second up to ``burst``). At most ``max_peers`` peers are tracked; the one
seen least recently is forgotten first, which only ever gives a forgotten peer a full bucket again (a flooder is
always recent, so it is never the one forgotten while it floods).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

# Defaults (ServerConfig and `joker-head serve`): an artist's client sends a heartbeat every 2 s and a few requests per
# job, far below these; a flood is cut to a share of the serve thread.
PEER_MSGS_PER_S = 200.0
PEER_BURST_MSGS = 400  # a reconnecting client re-fetches every job it follows at once
PEER_BYTES_PER_S = 64 * 1024 * 1024


@dataclass(frozen=True)
class Budget:
    """Per-peer limits. A rate <= 0 switches that limit off."""

    msgs_per_s: float
    burst_msgs: float
    bytes_per_s: float
    burst_bytes: float
    max_peers: int = 10_000


@dataclass(frozen=True)
class Refusal:
    """Why a message was refused, and when the peer's budget covers it again."""

    what: str  # "messages" or "bytes"
    retry_after_s: float


class PeerLimiter:
    def __init__(self, budget: Budget):
        self.budget = budget
        self._peers: "OrderedDict[str, list[float]]" = OrderedDict()  # peer -> [msg tokens, byte tokens, time]

    def __len__(self) -> int:
        return len(self._peers)

    def charge(self, peer: str, nbytes: int, now: float) -> Optional[Refusal]:
        """Take one message of ``nbytes`` from the peer's budget at time ``now`` (seconds, monotonic).

        Returns None when allowed (and charged), else a :class:`Refusal` (nothing charged).
        """
        b = self.budget
        nbytes = int(min(nbytes, b.burst_bytes))  # a message past the largest request is refused by size, not rate
        state = self._peers.get(peer)
        if state is None:
            state = self._peers[peer] = [float(b.burst_msgs), float(b.burst_bytes), now]
            while len(self._peers) > b.max_peers:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
            dt = max(0.0, now - state[2])
            state[0] = min(b.burst_msgs, state[0] + dt * b.msgs_per_s)
            state[1] = min(b.burst_bytes, state[1] + dt * b.bytes_per_s)
            state[2] = now
        if b.msgs_per_s > 0 and state[0] < 1.0:
            return Refusal("messages", (1.0 - state[0]) / b.msgs_per_s)
        if b.bytes_per_s > 0 and state[1] < nbytes:
            return Refusal("bytes", (nbytes - state[1]) / b.bytes_per_s)
        state[0] -= 1.0
        state[1] -= nbytes
        return None
