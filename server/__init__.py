"""The aggregation server. Imports protocol and transport; never agent."""
