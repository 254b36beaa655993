"""Deletion protection without the webhook: a finalizer held only while a connection has users.

An object of one of the in-use kinds (``--in-use-kinds``, default Deployments, StatefulSets,
DaemonSets, Jobs, CronJobs) labelled ``warehouse-operator.io/connection: <name>`` uses the
connection ``<name>`` of its namespace. The operator adds the finalizer
``warehouse-operator.io/in-use`` to a connection while it has users and removes it as soon as it
has none, so an unused connection never waits for the operator to be deleted. A connection
being deleted while still in use gets one status patch: a ``DeletionBlocked`` condition naming
the users, and one Warning event. The annotation ``warehouse-operator.io/allow-delete-in-use:
"true"`` turns the protection off for that connection.

The decisions are pure functions (``plan``, in ``model``); ``InUseController`` (``controller``)
applies them, one connection at a time: finalizers with the ``resourceVersion`` it last saw as a
precondition (a conflict means a newer version is on its way through the watch, and the decision
is made again then), the ``DeletionBlocked`` condition through the status writer shared with the
scheduler, which owns the rest of the status. Who uses what is known from the watches
(``UsersIndex``: every event of the in-use kinds, so that a removed label is seen too); before
protection is taken away or a held deletion is reported, the users are read from the API
(``list_users``), so a watch that has not listed everything yet, or
missed an event, never lets a connection in use be deleted.
"""

from warehouse_operator.inuse.controller import OWNER, InUseController, list_users
from warehouse_operator.inuse.model import (
    BLOCKED_CONDITION,
    FINALIZER,
    InUseKind,
    allows_delete_in_use,
    format_users,
    parse_kinds,
)

# what the rest of the operator uses; the model's other names are its own (inuse.model)
__all__ = [
    "BLOCKED_CONDITION",
    "FINALIZER",
    "OWNER",
    "InUseController",
    "InUseKind",
    "allows_delete_in_use",
    "format_users",
    "list_users",
    "parse_kinds",
]
