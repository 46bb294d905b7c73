"""MQTT plumbing shared by agent and server (paho-mqtt 2.x): connect, limits, reconnect.

Only moves bytes: it knows topics and sizes, never message contents.
"""
