"""Loading a reader's items when some image files cannot be decoded.

One truncated JPG among thousands must not end a long run or a training: the item is skipped
and counted, like an image without fixations (``run.log``, the summaries, the reports), and
``--strict`` restores the stop at the first one.  Only ``images.UnreadableImage`` is skipped;
any other ``UserError`` (a missing decoder plugin, a bad table) still stops, since it is not
about one file.  Missing image files are left out by the readers when they open (``skips``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gazebench.data.images import UnreadableImage
from gazebench.data.sample import Sample

# the reason under which skipped items are counted (run.log, summaries, reports)
UNREADABLE_REASON = "unreadable image files (empty, truncated or corrupt; skipped, --strict stops)"


@dataclass(frozen=True)
class Unreadable:
    """An item left out because a file of it does not decode."""

    index: int  # the item's index in the dataset
    image_id: str
    reason: str  # the one-line message: which file, what is wrong, the fix


def item_image_id(dataset, index: int) -> str:
    """The image id of item ``index`` (from the reader's records), without loading the item."""
    records = getattr(dataset, "records", None)
    if records is not None and "image_id" in records.columns:
        return str(records.iloc[index].image_id)
    return str(index)


def iter_items(dataset, indices: Iterable[int], strict: bool, skipped: list[Unreadable]) -> Iterator[Sample]:
    """``dataset[i]`` for each index, one at a time; an unreadable one is appended to ``skipped``.

    ``strict``: re-raise the first ``UnreadableImage`` instead (the one-line error of old).
    """
    for index in indices:
        index = int(index)
        try:
            yield dataset[index]
        except UnreadableImage as error:
            if strict:
                raise
            skipped.append(Unreadable(index, item_image_id(dataset, index), str(error)))


def load_items(dataset, indices: Iterable[int], strict: bool) -> tuple[list[Sample], list[Unreadable]]:
    """The items ``indices`` that could be read, in order, and the ones skipped (see ``iter_items``)."""
    skipped: list[Unreadable] = []
    samples = list(iter_items(dataset, indices, strict, skipped))
    return samples, skipped


def unreadable_lines(skipped: list[Unreadable], limit: int = 20) -> list[str]:
    """One line per skipped item (at most ``limit``, then how many more), for logs and summaries."""
    lines = [f"image {item.image_id} (item {item.index}): {item.reason}" for item in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"... and {len(skipped) - limit} more unreadable image(s)")
    return lines
