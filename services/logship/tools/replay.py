"""`mooseng log replay --to DIR`: a projection folded from the archive (nearest snapshot,
then the entries after it), to compare with a replica or a restore."""

from services.logship.archive import Archive
from services.logship.restore import replay as replay_into
from services.metadata.projection import open_projection


def replay(archive: Archive, to_dir: str, index: int | None = None,
           at_ns: int | None = None, use_effects: bool = True) -> dict:
    summary = replay_into(archive, to_dir, index, at_ns, use_effects=use_effects)
    with open_projection(to_dir) as proj:
        summary["content_digest"] = proj.content_digest()
    return summary
