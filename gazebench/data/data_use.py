"""The DATA_USE.md notice that every cache and run directory built from credentialed data carries."""

from __future__ import annotations

from pathlib import Path

from gazebench.atomic import write_atomic
from gazebench.data.manifest import Manifest

NOTICE_FILE = "DATA_USE.md"


def data_use_notice(manifest: Manifest) -> str:
    """Markdown naming the dataset, its licence and agreement, and what may not be shared."""
    return (
        f"# Data use notice\n\n"
        f"This folder was built by gazebench from **{manifest.title} {manifest.version}** ({manifest.source}).\n\n"
        f"- Licence: {manifest.licence}.\n"
        f"- Access: {manifest.access}\n"
        f"- Everything here (images, gaze maps, fixations, masks, scores with image ids, figures) is derived from "
        f"credentialed patient data and is covered by that agreement: do not share, publish or commit it, and "
        f"give it only to people with their own PhysioNet credentialed access to the dataset.\n"
        f"- Aggregate results (leaderboard means and confidence intervals) may be published as the agreement allows; "
        f"cite: {manifest.citation}\n"
    )


def write_data_use_notice(folder: Path, manifest: Manifest) -> Path:
    path = Path(folder) / NOTICE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data_use_notice(manifest))
    return path
