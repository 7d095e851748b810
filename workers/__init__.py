"""watchkeeper's runtime. ``celery -A workers worker|beat|inspect|flower`` finds ``app`` here.

``from workers import app`` gives the Celery app — in a user's own task module too (``celery -A
workers worker -I mytasks``: ``from workers import app`` then ``@app.task``). It is built on
first access (PEP 562) from the settings and the sources file, and reaches Redis only when first
used, so importing ``workers`` or any submodule does no network I/O. The module that builds it is
``workers.celery_app``, deliberately not ``workers.app``: a submodule of that name would replace
the attribute with the module as soon as it was imported.
"""

from typing import Any

from workers.core.version import VERSION

__version__ = VERSION


def __getattr__(name: str) -> Any:
    if name == "app":
        from workers.celery_app import get_app

        app = get_app()
        globals()["app"] = app
        return app
    raise AttributeError(f"module 'workers' has no attribute {name!r}")
