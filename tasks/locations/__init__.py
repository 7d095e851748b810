"""Location batching of new alerts: buffer, leased batches, resolvers, health.

Importing the package declares its Celery tasks, periodic flush, cleanup step and status
section.
"""

from tasks.locations import health as health
from tasks.locations import items as items
from tasks.locations import tasks as tasks
from tasks.locations.buffer import coordinates_of, payload
from tasks.locations.tasks import alerts_handed_over, enqueue_alerts, location_handoff

__all__ = [
    "alerts_handed_over",
    "coordinates_of",
    "enqueue_alerts",
    "health",
    "items",
    "location_handoff",
    "payload",
    "tasks",
]
