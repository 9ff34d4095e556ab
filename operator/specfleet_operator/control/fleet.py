"""The controller's view of a fleet: which replicas are ready, and what each one runs.

Two implementations: `local_backend.LocalBackend` (replica processes on loopback) and
`kube_backend.KubeBackend` (pods of a SpeculativeDeployment). The controller never knows
which one it talks to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from specfleet.contract import SpeculationConfig

if TYPE_CHECKING:
    from specfleet_operator.control.controller import DecisionRecord


@dataclass(frozen=True)
class Replica:
    name: str
    base_url: str  # http://host:port of the runtime server (OpenAI API, /metrics; /admin unless admin_url)
    admin_token: str | None
    # Changes when the replica restarts (pod uid + restart count, process id): a restarted
    # runtime is back on its startup config, whatever was recorded for its predecessor.
    incarnation: str
    applied: SpeculationConfig | None = None  # recorded for this incarnation, None if never
    admin_url: str | None = None  # http://host:port of the admin API when it has a port of its own

    @property
    def admin_base_url(self) -> str:
        return self.admin_url or self.base_url


class FleetBackend(Protocol):
    async def list_ready(self) -> list[Replica]:
        """Replicas that are ready to serve now; not-ready ones are left out."""
        ...

    async def record_applied(self, replica: Replica, config: SpeculationConfig) -> None:
        """Remember that `config` is in force on this incarnation of `replica`."""
        ...

    async def publish(self, record: "DecisionRecord") -> None:
        """Report a tick's outcome (status summary, conditions, events)."""
        ...
