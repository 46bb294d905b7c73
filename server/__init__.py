"""The aggregation server. Imports protocol and transport; never agent."""

__all__: list[str] = []
