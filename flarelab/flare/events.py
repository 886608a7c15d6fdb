"""The event the Flare orchestrator publishes on the node's event bus."""

from __future__ import annotations

from dataclasses import dataclass

from ..node.events import Event
from .state import FlareState

__all__ = ["FlareStateChanged"]


@dataclass(frozen=True)
class FlareStateChanged(Event):
    """The Flare flow on this node moved on (``state.phase`` says where it stands)."""

    state: FlareState
    previous: FlareState
