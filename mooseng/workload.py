"""A reproducible, valid mix of namespace commands, for benchmarks and crash tests."""

import random

from schemas import namespace_pb2 as pb

CALLER = pb.Caller(uid=1000, gid=1000, umask=0o022)


def command_mix(count: int, seed: int = 1) -> list[bytes]:
    """A valid mix: 40% create, 10% mkdir, 25% rename, 25% unlink, all succeeding."""
    rng = random.Random(seed)
    dirs, files = [1], []  # files: (parent, name)
    next_ino = 2
    # Hand the root to the workload's user, so every check runs as for a non-root user.
    out = [pb.Command(caller=pb.Caller(), setattr=pb.Setattr(inode=1, uid=1000, gid=1000))
           .SerializeToString()]
    count -= 1
    for i in range(count):
        roll = rng.random()
        if roll < 0.1 or not files and roll < 0.5:
            op = {"mkdir": pb.Mkdir(parent=rng.choice(dirs), name=b"d%d" % i, mode=0o755)}
            dirs.append(next_ino)
        elif roll < 0.5 or not files:
            parent = rng.choice(dirs)
            op = {"create": pb.Create(parent=parent, name=b"f%d" % i, mode=0o644)}
            files.append((parent, b"f%d" % i))
        elif roll < 0.75:
            k = rng.randrange(len(files))
            parent, name = files[k]
            new_parent = rng.choice(dirs)
            new_name = b"r%d" % i
            op = {"rename": pb.Rename(parent=parent, name=name, new_parent=new_parent,
                                      new_name=new_name)}
            files[k] = (new_parent, new_name)
            next_ino -= 1  # no inode allocated
        else:
            parent, name = files.pop(rng.randrange(len(files)))
            op = {"unlink": pb.Unlink(parent=parent, name=name)}
            next_ino -= 1
        next_ino += 1
        out.append(pb.Command(time_ns=1_800_000_000 * 10**9 + i, caller=CALLER,
                              **op).SerializeToString())
    return out
