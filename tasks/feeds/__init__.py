"""RSS/Atom feeds → the ``alerts`` stream (source kind ``feed``, ``[[feeds]]``)."""

from tasks.feeds import tasks as tasks
