"""watchkeeper's runtime. ``celery -A workers worker|beat|inspect|flower`` finds ``app`` here.

``app`` is created on first access (PEP 562), so importing a submodule — settings, config, the
CLI's ``check`` — never connects to or starts Redis.
"""

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "app":
        from workers.app import app

        return app
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
