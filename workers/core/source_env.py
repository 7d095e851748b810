"""Which environment variables a source's request profile may read (``env:NAME``).

A profile's variable is sent to the source's host. Whoever may add a source — an API writer, a
signed-in dashboard user, the preview (which reads the web process's environment) — could
otherwise name any variable of the fetching process: ``auth = "env:REDIS_URL"`` on a URL of
their own and a worker would send them the Redis password; the same with the dashboard's and
the API's tokens, the chat API's key or a notification sink's URL. So a source may read only
the variables ``WATCHKEEPER_SOURCE_ENV`` allows (comma-separated glob patterns, default
``WK_SOURCE_*``; ``*`` allows any name but those below, for a single-user setup), and never —
whatever the setting says, in any letter case — ``WATCHKEEPER_*``, ``MOONSHOT_*``, ``REDIS_*``,
``CELERY_*`` or a variable a notification sink's ``env:`` URL names (the stages declare theirs:
``declare_secret_variables``).

Checked where a definition is checked with the settings at hand (``check``, ``sources
add/edit/apply``, the API, the dashboard and its preview) and again by every poll, before the
variable is read (``workers.polling.profile``): a refusal is one line naming the source, the
field and the variable, never a value.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from workers.core.registry import Registry
from workers.core.request_profile import RequestProfile
from workers.core.runtime import Runtime
from workers.core.settings import Settings
from workers.core.sources_file import ConfigError, SourcesConfig

ALWAYS_DENIED = ("WATCHKEEPER_*", "MOONSHOT_*", "REDIS_*", "CELERY_*")
"""Names no source reads: watchkeeper's own settings and secrets (``REDIS_URL`` included)."""

SecretVariables = Callable[[SourcesConfig], Iterable[str]]
SECRET_VARIABLES: Registry[SecretVariables] = Registry("secret variables")


def declare_secret_variables(name: str, variables: SecretVariables) -> SecretVariables:
    """``variables(config)``: the environment variables a section of the sources file keeps
    its own secrets in (a sink's URLs) — never readable by a source."""
    return SECRET_VARIABLES.add(name, variables)


@dataclass(frozen=True)
class EnvPolicy:
    allowed: tuple[str, ...] = ("WK_SOURCE_*",)
    """Patterns of ``WATCHKEEPER_SOURCE_ENV`` (case-sensitive, as variable names are)."""
    secret: frozenset[str] = frozenset()
    """Variables the sources file's other sections hold secrets in."""

    @classmethod
    def of(cls, settings: Settings, config: SourcesConfig | None = None) -> EnvPolicy:
        secret: set[str] = set()
        if config is not None:
            for variables in SECRET_VARIABLES:
                secret.update(variables(config))
        return cls(settings.source_env_patterns, frozenset(secret))

    def refusal(self, var: str) -> str | None:
        """Why a source may not read ``var``; None when it may."""
        upper = var.upper()
        denied = next((p for p in ALWAYS_DENIED if fnmatch.fnmatchcase(upper, p)), None)
        if denied is not None:
            return (
                f"environment variable {var} cannot be read by a source ({denied} holds "
                "watchkeeper's own settings and secrets)"
            )
        if var in self.secret:
            return (
                f"environment variable {var} cannot be read by a source (a notification "
                "sink's URL is in it)"
            )
        if not any(fnmatch.fnmatchcase(var, p) for p in self.allowed):
            allowed = ", ".join(self.allowed) or "none"
            return (
                f"environment variable {var} cannot be read by a source "
                f"(WATCHKEEPER_SOURCE_ENV allows {allowed})"
            )
        return None

    def problems(self, name: str, profile: RequestProfile) -> list[str]:
        """``source '<name>': <field>: <why>`` for each variable of ``profile`` refused."""
        out = []
        for where, var in profile.variables():
            why = self.refusal(var)
            if why is not None:
                out.append(f"source '{name}': {where}: {why}")
        return out

    def config_problems(self, config: SourcesConfig) -> list[str]:
        """Every refusal in a sources file's sources."""
        return [p for s in config.sources for p in self.problems(s.name, s.request)]


def env_policy(rt: Runtime) -> EnvPolicy:
    """The policy of this process: its settings, and the sinks of its sources file (a broken
    file names none here; its load fails elsewhere with its own lines)."""
    try:
        config: SourcesConfig | None = rt.config()
    except ConfigError:
        config = None
    return EnvPolicy.of(rt.settings, config)
