"""Notifications: sinks (``[[notify]]``) deliver what watchkeeper finds through Apprise.

Importing the package declares the ``[[notify]]`` and ``[notify_filters]`` sections of the
sources file, the delivery task and its periodic entry, the ``notify`` status section and the
cleanup step. See ``STREAMS.md`` for the stream contract sinks rely on.
"""

from tasks.notify import cleanup as cleanup
from tasks.notify import config as config
from tasks.notify import dead_letters as dead_letters
from tasks.notify import hooks as hooks
from tasks.notify import status as status
from tasks.notify import tasks as tasks
from tasks.notify.tasks import notify_new_items

__all__ = ["cleanup", "config", "dead_letters", "notify_new_items", "status", "tasks"]
