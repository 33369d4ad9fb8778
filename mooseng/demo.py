"""`mooseng demo`: fold a scripted session of three users into a real projection,
show each command's outcome (errors included), then the resulting tree."""

import errno
import os
import stat
import tempfile

from mooseng.tree import render
from schemas import namespace_pb2 as pb
from services.metadata.applier import Applier
from services.metadata.commandfile import write_commands
from services.metadata.namespace import reads
from services.metadata.projection import open_projection

USERS = {
    "root": pb.Caller(uid=0, gid=0, umask=0),
    "alice": pb.Caller(uid=1000, gid=1000, umask=0o022),
    "bob": pb.Caller(uid=1001, gid=1001, groups=[1000], umask=0o022),
}
START_NS = 1_790_000_000 * 10**9  # 2026-09-22, so the demo's output is the same each run


class Script:
    """Applies commands one by one, remembering inodes by path and the log."""

    def __init__(self, applier: Applier, out):
        self.applier, self.out = applier, out
        self.paths = {"/": 1}
        self.log: list[bytes] = []
        self.session = 0

    def run(self, who: str, text: str, seq: int = 0, **op) -> pb.Result:
        index = len(self.log) + 1
        cmd = pb.Command(time_ns=START_NS + index * 10**9, caller=USERS[who],
                         session=self.session if seq else 0, seq=seq, **op)
        data = cmd.SerializeToString()
        self.log.append(data)
        result = self.applier.apply(index, data)
        outcome = "ok" if not result.errno else \
            f"{errno.errorcode[result.errno]}: {result.message}"
        if result.attr.inode:
            outcome += f" (inode {result.attr.inode})"
        print(f"{index:3}  {who:<6} {text:<48} {outcome}", file=self.out)
        return result

    def ino(self, path: str) -> int:
        return self.paths[path]

    def made(self, path: str, result: pb.Result) -> None:
        if not result.errno:
            self.paths[path] = result.attr.inode


def _parent(path: str) -> tuple[str, bytes]:
    head, name = path.rsplit("/", 1)
    return head or "/", name.encode()


def _play(s: Script) -> None:
    def mkdir(who, path, mode):
        head, name = _parent(path)
        s.made(path, s.run(who, f"mkdir {path} {mode:o}",
                           mkdir=pb.Mkdir(parent=s.ino(head), name=name, mode=mode)))

    def create(who, path, mode=0o644):
        head, name = _parent(path)
        s.made(path, s.run(who, f"create {path}",
                           create=pb.Create(parent=s.ino(head), name=name, mode=mode)))

    for path, mode in (("/home", 0o755), ("/tmp", 0o1777), ("/dev", 0o755),
                       ("/home/alice", 0o750), ("/home/bob", 0o755)):
        mkdir("root", path, mode)
    for user, uid in (("alice", 1000), ("bob", 1001)):
        s.run("root", f"chown {user} /home/{user}",
              setattr=pb.Setattr(inode=s.ino(f"/home/{user}"), uid=uid, gid=uid))
    s.made("/dev/null", s.run("root", "mknod /dev/null c 1 3", mknod=pb.Mknod(
        parent=s.ino("/dev"), name=b"null", mode=stat.S_IFCHR | 0o666, rdev=(1 << 8) | 3)))
    create("alice", "/home/alice/notes.txt")
    s.run("alice", "truncate notes.txt to 1234 bytes",
          setattr=pb.Setattr(inode=s.ino("/home/alice/notes.txt"), size=1234))
    s.run("alice", "setxattr user.status=draft", setxattr=pb.Setxattr(
        inode=s.ino("/home/alice/notes.txt"), name=b"user.status", value=b"draft"))
    s.run("alice", "symlink /home/alice/latest -> notes.txt", symlink=pb.Symlink(
        parent=s.ino("/home/alice"), name=b"latest", target=b"notes.txt"))
    s.run("alice", "link notes.txt /tmp/shared-notes", link=pb.Link(
        inode=s.ino("/home/alice/notes.txt"), new_parent=s.ino("/tmp"),
        new_name=b"shared-notes"))
    create("bob", "/tmp/bob.log")
    s.run("bob", "unlink /tmp/shared-notes (sticky /tmp)",
          unlink=pb.Unlink(parent=s.ino("/tmp"), name=b"shared-notes"))
    mkdir("bob", "/home/alice/intruder", 0o755)
    mkdir("alice", "/home/alice/project", 0o775)
    s.run("alice", "chmod g+s /home/alice/project", setattr=pb.Setattr(
        inode=s.ino("/home/alice/project"), mode=0o2775))
    s.run("alice", "mkfifo /home/alice/project/pipe", mknod=pb.Mknod(
        parent=s.ino("/home/alice/project"), name=b"pipe", mode=stat.S_IFIFO | 0o600))
    s.run("alice", "rename notes.txt -> notes-v1.txt", rename=pb.Rename(
        parent=s.ino("/home/alice"), name=b"notes.txt", new_parent=s.ino("/home/alice"),
        new_name=b"notes-v1.txt"))
    s.run("alice", "rename project -> project/sub (a loop)", rename=pb.Rename(
        parent=s.ino("/home/alice"), name=b"project", new_parent=s.ino("/home/alice/project"),
        new_name=b"sub"))
    s.run("alice", "rmdir project (not empty)",
          rmdir=pb.Rmdir(parent=s.ino("/home/alice"), name=b"project"))
    opened = s.run("bob", "open a session", open_session=pb.OpenSession(client="demo"))
    s.session = opened.session
    report = pb.Create(parent=s.ino("/home/bob"), name=b"report.txt", mode=0o640)
    first = s.run("bob", "create report.txt (session seq 1)", seq=1, create=report)
    again = s.run("bob", "the same request, retried", seq=1, create=report)
    assert first == again, "a retried request must return the first result"


def run_demo(data_dir: str | None = None, out=None) -> str:
    """Play the script into `data_dir` (a fresh temporary one by default); return
    the projection's content digest."""
    import sys
    out = out or sys.stdout
    with tempfile.TemporaryDirectory(prefix="mooseng-demo-") as scratch:
        target = data_dir or scratch
        with open_projection(os.path.join(target, "projection")) as proj:
            if proj.applied_index:
                raise SystemExit(f"{target} already holds a projection: give an empty "
                                 "--data directory")
            script = Script(Applier(proj), out)
            print("Folding the demo script (index, user, command, outcome):\n", file=out)
            _play(script)
            write_commands(os.path.join(target, "demo.commands"), script.log)
            print("\nThe resulting tree:\n", file=out)
            for line in render(proj):
                print("  " + line, file=out)
            fs = reads.statfs(proj)
            digest = proj.content_digest()
            print(f"\n{fs.inodes} inodes, {fs.used_bytes} bytes in files, applied index "
                  f"{proj.applied_index}, projection digest {digest[:16]}", file=out)
    return digest
