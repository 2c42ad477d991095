"""Scale-out on Ray: one account's rate limits shared by every worker of a cluster.

``RayExecutor`` runs quorum's engine on worker actors; ``ConnectionSpec`` describes the
connection each worker builds; the account's limits live in one limiter actor that
leases capacity to the workers (``AccountLedger``, ``LeasedLimit``); ``RemoteConnection``
is the driver's side of ``run(..., executor=...)`` and ``quorum batch --ray`` (the journal
and the cache stay with the driver). Ray is imported only
when an executor is made (the ``ray`` extra: ``pip install 'quorum[ray]'``).
"""

from quorum.engine.cluster.executor import ClusterStream, RayExecutor, StreamStats
from quorum.engine.cluster.lease import Grantor, LeasedLimit
from quorum.engine.cluster.ledger import AccountLedger, Lease, Report
from quorum.engine.cluster.remote import RemoteConnection
from quorum.engine.cluster.spec import ConnectionSpec

__all__ = [
    "AccountLedger",
    "ClusterStream",
    "ConnectionSpec",
    "Grantor",
    "Lease",
    "LeasedLimit",
    "RayExecutor",
    "RemoteConnection",
    "Report",
    "StreamStats",
]
