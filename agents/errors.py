"""The root of the node agent's errors: the CLI catches it and prints the message, exit 1."""

from __future__ import annotations


class AgentError(Exception):
    """The agent cannot do what it was asked (NVML, the spool, attribution, delivery)."""
