"""What the HTTP API needs from the node it serves: reads, submit, status and views, and the few operations of
the internal peer routes. The handlers depend on this interface only (server/node.py's PodNode satisfies it;
tests pass small fakes), so the API never imports the server."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from ..config import NodeConfig
from ..raft import commands as C
from ..waiting import Facts

T = TypeVar("T")


class NodeApi(Protocol):
    cfg: NodeConfig

    # ---- reads of the replicated state (the argument of fn is the state, read under the replica's lock) --
    def read(self, fn: Callable[[Any], T]) -> T: ...

    async def read_or_sync(self, fn: Callable[[Any], T | None]) -> T | None:
        """Read; on a miss, catch up with everything committed so far and read again."""

    async def caught_up(self) -> None:
        """Before a read that must see every earlier write made through any node."""

    async def read_execution(self, exec_id: int) -> dict[str, Any] | None:
        """An execution's record, or None if it does not exist (any more)."""

    async def wait_execution(self, exec_id: int, timeout_s: float) -> None:
        """Return when execution exec_id changes, or after timeout_s."""

    async def wait_change(self, timeout_s: float) -> None:
        """Return when this node applies the next change to the replicated state, or after timeout_s."""

    async def live_output(self, record: dict[str, Any]) -> tuple[str, str]:
        """Output so far of a running execution, from whichever node runs it."""

    async def output_from(self, record: dict[str, Any], stdout_at: int, stderr_at: int, wait_s: float) -> Any:
        """The record's current attempt's output after the byte offsets (an exec.output_slice.OutputSlice), from
        whichever node runs it, waiting up to wait_s for some; None if it cannot be had from there now."""

    # ---- writes ------------------------------------------------------------------------------------------
    async def submit(self, cmd: C.Command) -> dict[str, Any]:
        """Commit a command; its result, or the error it was refused with raised as a PodError."""

    def claim(self, exec_id: int) -> bool:
        """A newExecution&wait request starts collecting the execution this node collects (server/settle.py);
        False if another request here already does."""

    def settle(self, exec_id: int, *, handed: bool) -> None:
        """That request is done: it handed the result over (delete it) or not (release it), in a later entry."""

    def propose_placement(self, activity: str) -> str | None:
        """A node for a new execution of the activity to start on at once, or None."""

    # ---- status and views --------------------------------------------------------------------------------
    def status_view(self) -> dict[str, Any]: ...

    def serving(self) -> bool:
        """Has the node caught up with the cluster's state since it started (else the API answers 503)?"""

    def role(self) -> str:
        """leader, follower, candidate or observer (the open /health says it)."""

    async def sync_everywhere(self) -> dict[str, list[str]]:
        """Have every other member apply everything committed so far: {"confirmed": [...], "unconfirmed": [...]}
        (node ids; unconfirmed: not reached within peer_timeout_s)."""

    def workers_view(self) -> dict[str, Any]: ...

    def metrics_text(self, accept: str) -> tuple[bytes, str]:
        """GET /metrics: this node's metrics in the format `accept` (the scraper's Accept header) asks for
        (Prometheus text or OpenMetrics), and its content type."""

    def waiting_facts(self) -> Facts:
        """What this node knows beyond the state for waitingReason: a leader, the leader's live nodes, the
        price of one more node (podnode/waiting.py)."""

    # ---- the internal routes other nodes call (app.py checks their signature with cfg.secret) ----------------
    def local_output(self, exec_id: int) -> tuple[str, str] | None:
        """Output so far of an execution running on this node; None if it does not run here."""

    async def local_output_from(self, exec_id: int, attempt: int, stdout_at: int, stderr_at: int,
                                wait_s: float) -> Any:
        """The same for an attempt running on this node (the peer route); None if it does not run here."""

    def observer_alive(self, node: str) -> None:
        """On the leader: observer `node` says it is alive (Unavailable if this node does not lead, NotFound if
        the node is no observer)."""

    def is_observer(self) -> bool: ...

    def members(self) -> list[str]:
        """Raft addresses of the voting members, as this node knows them."""

    def join_role(self, node: str, raft_addr: str) -> str:
        """'voter' or 'observer' for a node asking to join through this one."""

    async def add_member(self, raft_addr: str) -> list[str]:
        """Add a voter to Raft; the members afterwards."""

    async def forward_to_leader(self, path: str, data: Mapping[str, str]) -> tuple[dict[str, Any], int]:
        """POST an internal request to the leader; (body, status)."""

    async def promote(self, members: list[str]) -> None:
        """This observer became a voter: restart its replica as one."""
