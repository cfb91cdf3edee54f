"""Parley: private wallet-to-wallet messaging (bridge daemon, relay node, CLI)."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 1
