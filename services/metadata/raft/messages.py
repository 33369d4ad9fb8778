"""What the Raft core consumes and produces: entries, messages, configurations.

Plain slotted classes rather than protobuf: the core builds many of them per
proposal batch, and only the transport needs the wire form.
"""

import json
from dataclasses import dataclass, field

# Entry kinds
NORMAL, NOOP, CONFIG = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    kind: int = NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Config:
    """Who votes and who only follows, and where members listen (for members added
    after the cluster started). Changed one server at a time."""

    voters: frozenset[int]
    learners: frozenset[int] = frozenset()
    addresses: tuple[tuple[int, str], ...] = ()   # sorted (id, "host:port") pairs

    @property
    def members(self) -> frozenset[int]:
        return self.voters | self.learners

    @property
    def quorum(self) -> int:
        return len(self.voters) // 2 + 1

    def address_book(self) -> dict[int, str]:
        return dict(self.addresses)

    def with_members(self, voters, learners, addresses: dict[int, str]) -> "Config":
        members = set(voters) | set(learners)
        kept = tuple(sorted((i, a) for i, a in addresses.items() if i in members))
        return Config(frozenset(voters), frozenset(learners), kept)

    def encode(self) -> bytes:
        return json.dumps({"voters": sorted(self.voters), "learners": sorted(self.learners),
                           "addresses": {str(i): a for i, a in self.addresses}}).encode()

    @classmethod
    def decode(cls, data: bytes) -> "Config":
        raw = json.loads(data)
        addresses = tuple(sorted((int(i), a) for i, a in raw.get("addresses", {}).items()))
        return cls(frozenset(raw["voters"]), frozenset(raw.get("learners", ())), addresses)


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int
    term: int
    config: Config


class MsgType:
    APP = 1            # AppendEntries
    APP_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    PRE_VOTE = 5
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAP = 9           # InstallSnapshot (the data travels beside it, see snapshot_data)
    TIMEOUT_NOW = 10   # leadership transfer: campaign at once

    NAMES = {1: "APP", 2: "APP_RESP", 3: "VOTE", 4: "VOTE_RESP", 5: "PRE_VOTE",
             6: "PRE_VOTE_RESP", 7: "HEARTBEAT", 8: "HEARTBEAT_RESP", 9: "SNAP",
             10: "TIMEOUT_NOW"}


CAMPAIGN_TRANSFER = b"transfer"  # vote context: a leadership transfer, ignore leases


@dataclass(slots=True)
class Message:
    type: int
    frm: int
    to: int
    term: int
    index: int = 0          # APP: previous index; VOTE: last index; APP_RESP: match or rejected
    log_term: int = 0       # APP: previous term; VOTE: last term; rejection: hint term
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0    # rejection: the follower's suggested next probe index
    context: bytes = b""    # heartbeat: read-index request; vote: CAMPAIGN_TRANSFER
    snapshot: SnapshotMeta | None = None
    snapshot_data: object = None  # opaque to the core: the shell's snapshot handle

    def __repr__(self) -> str:
        kind = MsgType.NAMES.get(self.type, self.type)
        extra = f" +{len(self.entries)}" if self.entries else ""
        rej = " reject" if self.reject else ""
        return (f"<{kind} {self.frm}->{self.to} t{self.term} i{self.index} lt{self.log_term}"
                f" c{self.commit}{extra}{rej}>")


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read-index request answered: serve it once the applied index reaches `index`."""

    context: bytes
    index: int


@dataclass(slots=True)
class Ready:
    """What the shell must do, in this order: persist hard state, snapshot and
    entries (fsync); then send messages; then apply committed entries."""

    hard_state: tuple[int, int, int] | None = None   # (term, vote, commit)
    snapshot: SnapshotMeta | None = None
    snapshot_data: object = None
    entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    committed: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.hard_state or self.snapshot or self.entries or self.messages
                    or self.committed or self.read_states)
