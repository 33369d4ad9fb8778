"""Opening files to read in a second region that follows another region's log.

An open is a command in a primary region: the session records it, so that a file
unlinked while open keeps its data until the last release. A following region
deletes nothing of its own (what it deletes, region A deleted first), so a reading
open needs no record there, and it cannot have one: such a region refuses every
command of its own. The API answers these opens (and their releases) from the
projection instead, like reads; opens that could change the file stay EROFS.
"""

from schemas import namespace_pb2 as pb
from services.common.posix import permissions as perm
from services.metadata.namespace import reads

O_ACCMODE, O_TRUNC = 0o3, 0o1000


def unrecorded(command: pb.Command) -> bool:
    """An open for reading only (no O_TRUNC), or a release: nothing to record in a
    region that follows another's log."""
    kind = command.WhichOneof("op")
    if kind == "release":
        return True
    return kind == "open" and not command.open.flags & (O_ACCMODE | O_TRUNC)


def answer(view, caller: pb.Caller, command: pb.Command) -> pb.Result:
    """What the fold would answer, without the record; FsError like the fold's."""
    if command.WhichOneof("op") == "release":
        return pb.Result()
    node = reads.inode(view, command.open.inode)
    perm.require(caller, node, perm.R, "open")
    return pb.Result(attr=node.to_attr())
