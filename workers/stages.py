"""The pipeline stages this installation runs.

Importing a stage registers what it declares — source kinds, status sections, cleanup steps,
periodic entries, sinks — in the runtime's registries (``workers.core.registry``). Only the
assembly modules (``workers.celery_app``, ``workers.cli``) import this module: the runtime
never imports a stage.
"""

from __future__ import annotations

import tasks.cleanup
import tasks.feeds
import tasks.http_logs
import tasks.locations
import tasks.notify
import tasks.scrape

STAGE_MODULES = (
    tasks.cleanup,
    tasks.feeds,
    tasks.http_logs,
    tasks.scrape,
    tasks.locations,
    tasks.notify,
)

#: The modules Celery imports in a worker (their ``shared_task``s are registered on import).
TASK_MODULES = ("workers.polling.batch", *(module.__name__ for module in STAGE_MODULES))
