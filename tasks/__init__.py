"""Pipeline stages, one module each. Tasks are thin ``shared_task`` wrappers over plain
functions that take their dependencies (Redis client, HTTP session, settings) as arguments."""
