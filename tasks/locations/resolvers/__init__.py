"""Location resolvers: the offline gazetteer (default and fallback) and an OpenAI-compatible
chat-completions API (Moonshot/Kimi), chosen by whether an API key is set."""

from __future__ import annotations

from tasks.locations.model import Resolver
from workers.core.settings import Settings


def make_resolver(settings: Settings) -> Resolver:
    """The chat-completions resolver when MOONSHOT_API_KEY is set, else the offline gazetteer."""
    if settings.moonshot_api_key:
        from tasks.locations.resolvers.chat_completions import ChatCompletionsResolver

        return ChatCompletionsResolver(settings)
    from tasks.locations.resolvers.gazetteer import GazetteerResolver

    return GazetteerResolver()
