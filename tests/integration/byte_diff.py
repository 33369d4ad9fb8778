"""Where two (large) byte strings first differ, for assertion messages and reports:
pytest's own diff of megabytes would take minutes."""


def differs(got: bytes, want: bytes) -> str:
    """Empty when they are equal."""
    if got == want:
        return ""
    at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
              min(len(got), len(want)))
    return (f"{len(got)} bytes read, {len(want)} expected; first difference at {at}: "
            f"{got[at:at + 8].hex()} != {want[at:at + 8].hex()}")
