"""A user's own task module, as the Celery convention has it: ``from workers import app``.

Loaded by a real worker with ``celery -A workers worker -I tests.support.user_tasks``.
"""

from __future__ import annotations

from workers import app


@app.task(name="tests.user.double", ignore_result=False)
def double(value: int) -> int:
    return 2 * value
