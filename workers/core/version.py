"""The package version, in the lowest layer so the User-Agent and the CLI share it."""

VERSION = "0.1.0"
