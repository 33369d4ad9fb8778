"""Parsing the addresses users type: HOST:PORT and ID=HOST:PORT lists."""


class AddressError(ValueError):
    pass


def host_port(text: str) -> str:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise AddressError(f"{text!r} is not HOST:PORT (for example 127.0.0.1:9421)")
    return f"{host}:{port}"


def peer_map(text: str) -> dict[int, str]:
    """"1=h:p,2=h:p" -> {1: "h:p", 2: "h:p"}."""
    peers: dict[int, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        ident, sep, address = item.partition("=")
        if not sep or not ident.isdigit() or int(ident) < 1:
            raise AddressError(f"{item!r} is not ID=HOST:PORT with a positive numeric ID")
        if int(ident) in peers:
            raise AddressError(f"node id {ident} is listed twice in --peers")
        peers[int(ident)] = host_port(address)
    if not peers:
        raise AddressError("--peers lists no nodes")
    return peers


def address_list(text: str) -> list[str]:
    out = [host_port(a) for a in text.split(",") if a.strip()]
    if not out:
        raise AddressError("no addresses given")
    return out
