"""Where people stood while the background was first learnt.

The background model starts from the first samples, whoever is in view included. When such a
person moves off, what was behind them differs from that background: it is neither a thing put
there (a still region) nor their body on the floor (foreground where they were), but what was
behind them. A spot is known until it settles: its person gone and nothing there differing from
the background any more; after that, a thing put there is a thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from streamd.perception.geometry import Box, Detection

if TYPE_CHECKING:
    from collections.abc import Sequence

    from streamd.perception.background import BackgroundModel, Foreground

__all__ = ["StartupSpots"]


@dataclass
class StartupSpots:
    share: float = 0.5  # of a region or body inside a spot: it is that spot's
    settled_fg: float = 0.02  # less foreground than this in a spot whose person left: settled
    spots: list[Box] = field(default_factory=list)

    def learn(self, detections: Sequence[Detection]) -> None:
        """While the background is being learnt: note where people are."""
        self.spots += [d.box for d in detections if d.label == "person"]

    def holds(self, box: Box) -> bool:
        """Is `box` mostly inside a spot (what was behind a person, not a body or a thing)?"""
        return any(box.intersection(s) >= self.share * box.area for s in self.spots)

    def without_ghosts(
        self, fg: Foreground, detections: Sequence[Detection], background: BackgroundModel
    ) -> Foreground:
        """`fg` minus the still regions that are spots' ghosts; those are relearnt as
        background, and each spot resolved so goes."""
        here = [d.box for d in detections if d.label == "person"]
        self.spots = [
            s
            for s in self.spots
            if any(s.intersection(h) > 0 for h in here) or fg.overlap(fg.fg, s) >= self.settled_fg
        ]
        if not self.spots or not fg.still:
            return fg
        kept = []
        for region in fg.still:
            spot = next(
                (
                    s
                    for s in self.spots
                    if region.box.intersection(s) >= self.share * region.box.area
                ),
                None,
            )
            if spot is None:
                kept.append(region)
                continue
            background.relearn(region.box, fg.scale)
            self.spots.remove(spot)
        return replace(fg, still=tuple(kept))
