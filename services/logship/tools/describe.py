"""How the log tools show an archived entry: its time, who sent it, the operation and
its arguments, and (when replaying) its result. Pure: entries in, dicts and text out."""

import datetime
import json

from google.protobuf.message import DecodeError

from schemas import namespace_pb2 as pb
from services.logship.archive import ArchivedEntry
from services.metadata.raft.messages import CONFIG, NOOP, NORMAL, Config

KIND_NAMES = {NORMAL: "command", NOOP: "noop", CONFIG: "config"}
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def iso_time(time_ns: int) -> str:
    """ISO-8601 UTC with nanoseconds: 2026-11-26T10:15:00.000000123Z."""
    seconds, ns = divmod(time_ns, 10**9)
    try:
        stamp = (_EPOCH + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S")
    except OverflowError:
        return f"@{time_ns}ns"
    return f"{stamp}.{ns:09d}Z"


def parse_time(text: str) -> int:
    """ns since the epoch from ISO-8601 (a time without a zone is UTC) or plain ns."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        moment = datetime.datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time: give ISO-8601 such as "
                         f"2026-11-26T10:15:00Z, or nanoseconds since the epoch") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def _plain(value):
    """A protobuf field value as JSON-friendly data: bytes as text where they are text."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if hasattr(value, "ListFields"):
        return {f.name: _plain(v) for f, v in value.ListFields()}
    if isinstance(value, list | tuple) or type(value).__name__.startswith("Repeated"):
        return [_plain(v) for v in value]
    return value


def describe(entry: ArchivedEntry, result: pb.Result | None = None) -> dict:
    """One entry as a dict: index, term, time, kind; for a command its session, seq,
    caller, operation and arguments; the result if given."""
    out = {"index": entry.index, "term": entry.term, "time": iso_time(entry.time_ns),
           "time_ns": entry.time_ns, "kind": KIND_NAMES.get(entry.kind, str(entry.kind))}
    if entry.kind == CONFIG:
        try:
            config = Config.decode(entry.data)
            out["args"] = {"voters": sorted(config.voters), "learners": sorted(config.learners)}
        except (ValueError, KeyError):
            out["args"] = {"raw": entry.data.decode("utf-8", "backslashreplace")}
    elif entry.kind == NORMAL:
        try:
            cmd = pb.Command.FromString(entry.data)
        except DecodeError:
            out.update(op="unparsable", args={"bytes": len(entry.data)})
            return out
        op = cmd.WhichOneof("op") or "none"
        out.update(session=cmd.session, seq=cmd.seq, op=op,
                   caller={"uid": cmd.caller.uid, "gid": cmd.caller.gid},
                   args=_plain(getattr(cmd, op)) if op != "none" else {})
        if result is not None:
            out["result"] = _plain(result) or {"errno": 0}
    return out


def line(info: dict) -> str:
    """The human form: index, time, session/seq, operation, arguments, result."""
    who = f"s{info['session']}/{info['seq']}" if info.get("session") else "-"
    op = info.get("op", info["kind"])
    args = " ".join(f"{k}={_short(k, v)}" for k, v in info.get("args", {}).items())
    text = f"{info['index']:>10} {info['time']} t{info['term']} {who:<12} {op:<12} {args}"
    if "result" in info:
        text += "  -> " + _result_text(info["result"])
    return text.rstrip()


def _short(key: str, value) -> str:
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}={_short(k, v)}" for k, v in value.items()) + "}"
    if key == "mode" and isinstance(value, int):
        return oct(value)
    return json.dumps(value)


def _result_text(result: dict) -> str:
    if result.get("errno"):
        return f"error {result['errno']} ({result.get('message', '')})"
    attr = result.get("attr")
    if attr:
        return f"ok inode={attr.get('inode', 0)} mode={oct(attr.get('mode', 0))}"
    return "ok"
