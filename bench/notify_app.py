"""The Celery app with the notify stage loaded, for ``bench/bench_notify.py``'s worker and beat
(``celery -A bench.notify_app worker|beat``) until ``workers/stages.py`` imports it."""

import tasks.notify  # noqa: F401 (declares [[notify]], the delivery task and its beat entry)
from workers.celery_app import get_app

app = get_app()
