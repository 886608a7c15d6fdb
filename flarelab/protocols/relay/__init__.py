"""Circuit Relay v2 (specs: relay/circuit-v2.md): the relay service, the client, the transport.

* A public node becomes a relay with :class:`RelayService` (hop: RESERVE and CONNECT,
  signed vouchers, limits per circuit and per relay, spans ``relay.reserve`` and
  ``relay.circuit``, go-libp2p's ``libp2p_relaysvc_*`` metrics).
* Any node dials and listens through relays once :meth:`RelayTransport.install` added the
  ``p2p-circuit`` transport: ``node.connect(".../p2p/R/p2p-circuit/p2p/T")`` and
  ``node.listen(".../p2p/R/p2p-circuit")`` (a kept reservation whose circuit addresses the
  node advertises). Relayed connections are limited.
* :func:`reserve` and :func:`open_circuit` are the two client exchanges on their own;
  :class:`ReservationBook` and :class:`ReservationKeeper` are the pure cores.

::

    RelayService(relay)                                 # on a public node: it relays
    RelayTransport.install(a)                           # on any node: dial and listen
    RelayTransport.install(b)
    await b.listen(f"{relay.addrs[0]}/p2p-circuit")     # reserve; advertise the circuit
    conn = await a.connect(f"{relay.addrs[0]}/p2p-circuit/p2p/{b.peer_id}")
    assert conn.limited
    await a.ping(b.peer_id)                             # ping allows limited connections
"""

from __future__ import annotations

from .book import (
    DEFAULT_CIRCUIT_LIMIT,
    CircuitBudget,
    Rate,
    RateLimiter,
    RelayLimits,
    ReservationBook,
)
from .client import Reservation, open_circuit, reserve
from .errors import RelayProtocolError, RelayRefusedError
from .hop import RelayAcl, RelayService, RelayServiceConfig
from .keeper import KeeperState, ReservationKeeper
from .messages import (
    HOP_PROTOCOL,
    MAX_MESSAGE_SIZE,
    STOP_PROTOCOL,
    VOUCHER_DOMAIN,
    VOUCHER_PAYLOAD_TYPE,
    Limit,
    Status,
    Voucher,
)
from .metrics import RelayServiceMetrics
from .transport import (
    CIRCUIT_TRANSPORT,
    RelayClientConfig,
    RelayListener,
    RelayTransport,
    split_circuit_addr,
)

__all__ = [
    "CIRCUIT_TRANSPORT",
    "DEFAULT_CIRCUIT_LIMIT",
    "HOP_PROTOCOL",
    "MAX_MESSAGE_SIZE",
    "STOP_PROTOCOL",
    "VOUCHER_DOMAIN",
    "VOUCHER_PAYLOAD_TYPE",
    "CircuitBudget",
    "KeeperState",
    "Limit",
    "Rate",
    "RateLimiter",
    "RelayAcl",
    "RelayClientConfig",
    "RelayLimits",
    "RelayListener",
    "RelayProtocolError",
    "RelayRefusedError",
    "RelayService",
    "RelayServiceConfig",
    "RelayServiceMetrics",
    "RelayTransport",
    "Reservation",
    "ReservationBook",
    "ReservationKeeper",
    "Status",
    "Voucher",
    "open_circuit",
    "reserve",
    "split_circuit_addr",
]
