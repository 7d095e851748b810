"""The web dashboard (``watchkeeper web``): sources, items, dead letters, memory over time.

``app`` builds the Starlette app, ``auth`` decides who may see and act, ``sources``,
``items`` and ``memory`` read what the pages show from Redis, ``serve`` runs it with uvicorn.
"""
