"""Erasure coding with pyeclib: data becomes k data parts and m parity parts, any k of
which give the data back.

Parts are self-describing: pyeclib prefixes each with a header holding its index, the
backend that made it, the original data size and (chksum_type inline_crc32) a CRC of
the part. pyeclib's own decode trusts whatever it is given (a part made by another
backend or a flipped byte decodes to wrong data, silently), so every part is checked
against its header before use, and damaged or foreign parts are set aside.

Backends are not interchangeable: isa_l_rs_vand and liberasurecode_rs_vand build
different parity, so a chunk must be decoded with the backend it was encoded with
(`ErasureCoder(k, m, backend=...)`; a part's backend is checked on every decode).
pyeclib's wheel from PyPI bundles liberasurecode and ISA-L, so both are there after
`pip install pyeclib`; no Debian package is needed.
"""

import logging
from collections.abc import Mapping

log = logging.getLogger(__name__)

BACKENDS = ("isa_l_rs_vand", "liberasurecode_rs_vand")   # in order of preference


class ErasureError(ValueError):
    """Parts that cannot give the data back, or a coder that cannot be made."""


class ErasureUnavailableError(RuntimeError):
    pass


def _pyeclib():
    try:
        from pyeclib import ec_iface
    except ImportError as e:
        raise ErasureUnavailableError(
            f"pyeclib cannot be imported ({e}): install it with `pip install pyeclib` "
            "(its wheel bundles liberasurecode and ISA-L)") from e
    return ec_iface


def available_backends() -> list[str]:
    """The backends of BACKENDS that this machine's pyeclib can run."""
    ec_iface, found = _pyeclib(), []
    for backend in BACKENDS:
        try:
            ec_iface.ECDriver(k=2, m=1, ec_type=backend)
        except ec_iface.ECDriverError:
            continue
        found.append(backend)
    return found


class ErasureCoder:
    """k data parts + m parity parts, with `backend` or the first available of BACKENDS."""

    def __init__(self, k: int, m: int, backend: str | None = None):
        ec_iface = _pyeclib()
        self._errors = ec_iface.ECDriverError
        if backend is None:
            available = available_backends()
            if not available:
                raise ErasureUnavailableError(
                    f"pyeclib has none of the backends {', '.join(BACKENDS)}: reinstall it "
                    "from its wheel (`pip install --force-reinstall pyeclib`), or install "
                    "Debian's liberasurecode-dev and build it from source")
            backend = available[0]
        if not (isinstance(k, int) and isinstance(m, int) and k >= 1 and m >= 1):
            raise ErasureError(f"ec={k}+{m} is not a valid erasure code: k and m must both be "
                               "at least 1 (k data parts, m parity parts)")
        try:
            self._driver = ec_iface.ECDriver(k=k, m=m, ec_type=backend,
                                             chksum_type="inline_crc32")
        except ec_iface.ECDriverError as e:
            raise ErasureError(f"pyeclib cannot make an ec={k}+{m} coder with backend "
                               f"{backend}: {e}; choose other k, m or backend "
                               f"({', '.join(BACKENDS)})") from e
        self.k, self.m, self.backend = k, m, backend

    def encode(self, data) -> list[bytes]:
        """The k + m parts of `data`, part i at index i (data parts first)."""
        return self._driver.encode(bytes(data))

    def decode(self, parts: Mapping[int, bytes]) -> bytes:
        """The data, from any k intact parts of `parts` (part index -> part)."""
        good = self._usable(parts, "decode")
        return self._driver.decode([good[i] for i in sorted(good)[:self.k]])

    def reconstruct(self, parts: Mapping[int, bytes], missing: list[int]) -> dict[int, bytes]:
        """Rebuild the parts numbered `missing` from any k intact parts of `parts`."""
        wrong = [i for i in missing if not 0 <= i < self.k + self.m]
        if wrong:
            raise ErasureError(f"cannot rebuild parts {wrong}: an ec={self.k}+{self.m} chunk "
                               f"has parts 0..{self.k + self.m - 1}")
        if not missing:
            return {}
        good = self._usable(parts, "rebuild parts")
        rebuilt = self._driver.reconstruct([good[i] for i in sorted(good)[:self.k]],
                                           sorted(set(missing)))
        # pyeclib returns them in its own order; each part's header says which it is
        by_index = {self._driver.get_metadata(p, formatted=True)["index"]: p for p in rebuilt}
        return {i: by_index[i] for i in missing}

    def _inspect(self, index: int, part: bytes) -> tuple[dict, str | None]:
        """Part `index`'s header, and why the part cannot be used (None if it can)."""
        try:
            meta = self._driver.get_metadata(part, formatted=True)
        except self._errors:
            return {}, "its header is damaged or it is not a part"
        if meta["backend_id"] != self.backend:
            return meta, (f"it was made by backend {meta['backend_id']}, not {self.backend}: "
                          "decode it with a coder of that backend")
        if meta["index"] != index:
            return meta, f"it is part {meta['index']}, not part {index}"
        if meta["chksum_mismatch"]:
            return meta, "its data fails its CRC"
        return meta, None

    def _usable(self, parts: Mapping[int, bytes], doing: str) -> dict[int, bytes]:
        """The parts fit to use; ErasureError if fewer than k are."""
        sizes, problems = {}, {}
        for i, part in parts.items():
            meta, why = self._inspect(i, part)
            if why:
                problems[i] = why
            else:
                sizes.setdefault(meta["orig_data_size"], []).append(i)
        common = max(sizes, key=lambda size: len(sizes[size]), default=None)
        for size, indices in sizes.items():     # parts of an encoding of other data
            if size != common:
                problems.update((i, f"it encodes {size} bytes, most parts {common}")
                                for i in indices)
        good = {i: bytes(parts[i]) for i in sizes.get(common, [])}
        detail = "; ".join(f"part {i}: {why}" for i, why in sorted(problems.items()))
        if len(good) < self.k:
            raise ErasureError(
                f"cannot {doing}: ec={self.k}+{self.m} needs {self.k} intact parts, got "
                f"{len(good)} ({sorted(good)})" + (f"; set aside {detail}" if detail else "")
                + "; fetch more parts from other chunkservers")
        if problems:
            log.warning("erasure %s: set aside %s", doing, detail)
        return good
