"""The on-device agent. Imports protocol and transport; never server, models or torch."""
