"""A private network for one nemesis run: a bridge, and a network namespace per node.

Each node gets its own address on the bridge (10.213.X.N); the host, where the
clients run, is 10.213.X.1. Faults are packet filters in the nodes' namespaces
(iptables, legacy backend: the kernel here has no netem or tc classifiers):

- `cut(a, b)` drops what a sends to b (one direction); `cut_both` both ways;
- `lose(p)` drops a fraction p of what every node receives;
- `heal()` removes every rule.

Everything is named after the run (`mng<run>`), and the run's process id is kept in
RUNS/<run>: `close()` removes what the run made, and a later run's `sweep()` what a
run that died left, never what a run still going has (runs may overlap).
"""

import contextlib
import os
import secrets
import subprocess

HOST = 1
PREFIX = "mng"
IPTABLES = "iptables-legacy"
RUNS = "/run/mooseng-nemesis"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=30)


def available() -> str | None:
    """Why a run cannot happen here, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", IPTABLES):
        if sh("sh", "-c", f"command -v {tool}", check=False).returncode:
            return f"{tool} is not installed (scripts/setup.sh installs iptables)"
    return None


def sweep() -> None:
    """Remove what runs whose process is gone left (namespaces and links)."""
    os.makedirs(RUNS, exist_ok=True)
    dead = {run for run in os.listdir(RUNS) if not _alive(os.path.join(RUNS, run))}
    for name in sh("ip", "netns", "list", check=False).stdout.split():
        if name.startswith(PREFIX) and name[len(PREFIX):len(PREFIX) + 4] in dead:
            sh("ip", "netns", "delete", name, check=False)
    for line in sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(PREFIX) and name[len(PREFIX):len(PREFIX) + 4] in dead:
            sh("ip", "link", "delete", name, check=False)
    for run in dead:
        os.remove(os.path.join(RUNS, run))


def _alive(pid_file: str) -> bool:
    try:
        with open(pid_file) as f:
            os.kill(int(f.read()), 0)
    except (OSError, ValueError):
        return False
    return True


class NetLab:
    def __init__(self, nodes: list[int]):
        self.run = secrets.token_hex(2)
        self.subnet = f"10.213.{int(self.run, 16) % 250 + 1}"
        self.bridge = f"{PREFIX}{self.run}br"
        self.nodes = list(nodes)
        self.rules: list[tuple[int, list[str]]] = []   # (node, iptables rule) in force

    # -- names ----------------------------------------------------------------------------
    def address(self, node: int) -> str:
        return f"{self.subnet}.{node + 1}" if node != HOST else f"{self.subnet}.1"

    def namespace(self, node: int) -> str:
        return f"{PREFIX}{self.run}n{node}"

    def exec_prefix(self, node: int) -> list[str]:
        """Prepend to a command to run it in the node's namespace."""
        return ["ip", "netns", "exec", self.namespace(node)]

    # -- life ------------------------------------------------------------------------------
    def open(self) -> "NetLab":
        os.makedirs(RUNS, exist_ok=True)
        with open(os.path.join(RUNS, self.run), "w") as f:
            f.write(str(os.getpid()))
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.address(HOST)}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for node in self.nodes:
            self._add_node(node)
        return self

    def _add_node(self, node: int) -> None:
        ns, veth = self.namespace(node), f"{PREFIX}{self.run}v{node}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", veth, "master", self.bridge, "up")
        sh("ip", "-n", ns, "addr", "add", f"{self.address(node)}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")

    def close(self) -> None:
        for node in self.nodes:
            sh("ip", "netns", "delete", self.namespace(node), check=False)
        sh("ip", "link", "delete", self.bridge, check=False)
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(RUNS, self.run))

    # -- faults ----------------------------------------------------------------------------
    def cut(self, src: int, dst: int) -> None:
        """Drop what src sends to dst (filtered where it arrives, or where it leaves
        for the host, which has no namespace of its own here)."""
        if dst != HOST:
            self._rule(dst, ["INPUT", "-s", self.address(src), "-j", "DROP"])
        else:
            self._rule(src, ["OUTPUT", "-d", self.address(dst), "-j", "DROP"])

    def cut_both(self, a: int, b: int) -> None:
        self.cut(a, b)
        self.cut(b, a)

    def lose(self, fraction: float) -> None:
        for node in self.nodes:
            self._rule(node, ["INPUT", "-m", "statistic", "--mode", "random",
                              "--probability", f"{fraction:.3f}", "-j", "DROP"])

    def heal(self) -> None:
        for node in {n for n, _ in self.rules}:
            sh(*self.exec_prefix(node), IPTABLES, "-F", check=False)
        self.rules.clear()

    def _rule(self, node: int, rule: list[str]) -> None:
        sh(*self.exec_prefix(node), IPTABLES, "-A", *rule)
        self.rules.append((node, rule))
