"""Listing sites → the ``listings`` stream (source kind ``site``, ``[[sites]]``), with a
bounded session history per site."""

from tasks.scrape import tasks as tasks
