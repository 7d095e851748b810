"""The source registry's operations: applying sources files, the ``watchkeeper sources``
commands, OPML import and export, and the registry's ``status`` section."""
