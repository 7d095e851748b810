"""HTTP log endpoints → the ``logs`` stream (source kind ``http_log``, ``[[http_logs]]``)."""

from tasks.http_logs import tasks as tasks
