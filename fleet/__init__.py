"""Drives real agents, a real server and a broker together: the demo and the fleet simulator."""

__all__: list[str] = []
