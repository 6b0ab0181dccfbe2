"""The brokers: the only aiomqtt/paho import, one uplink per destination, the drain, path
supervision.
"""
