"""The fixed, versioned holdout every champion and challenger is compared on.

Policy (docs/retraining.md):

* Units are split groups (a capture by default, or a server address): a group is in the holdout
  or in training, never both, and a holdout group is never trained on by any version.
* Only groups arriving for the first time are ever added; groups already seen never move. Of the
  new groups of each class (a group's class is its most common label), ``round(fraction * n)``
  go to the holdout (at least one when the class brought two or more), chosen by the SHA-256 of
  the group name: the choice depends on nothing else, so a re-run makes the same choice.
* Each growth is a new holdout version. A run compares champion and challenger on the holdout
  as it stood when the run started (the version the champion was judged on); the groups it adds
  are held out from training at once and scored from the next run on. The first run has no
  earlier holdout and uses the one it creates.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from pcapvision.retrain.registry import utc_now


def majority_labels(groups: Iterable[str], labels: Iterable[str]) -> dict[str, str]:
    """The most common label of each group (ties: the alphabetically first)."""
    counts: dict[str, Counter[str]] = {}
    for g, lab in zip(groups, labels):
        counts.setdefault(str(g), Counter())[str(lab)] += 1
    return {g: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for g, c in counts.items()}


def _order(group: str) -> str:
    return hashlib.sha256(group.encode("utf-8")).hexdigest()


def grow(holdout: Mapping[str, Any], new_groups: Mapping[str, str], fraction: float) -> tuple[dict[str, Any], list[str]]:
    """The holdout after the arrival of ``new_groups`` ({group: class}); and the groups added.

    A new holdout version is made only when groups are added.
    """
    current = {"version": 0, "groups": {}, "history": [], **holdout}
    fresh = {g: lab for g, lab in new_groups.items() if g not in current["groups"]}
    by_class: dict[str, list[str]] = {}
    for g, lab in fresh.items():
        by_class.setdefault(lab, []).append(g)
    added: list[str] = []
    for lab in sorted(by_class):
        members = sorted(by_class[lab], key=_order)
        k = round(fraction * len(members))
        if k == 0 and len(members) >= 2:
            k = 1
        added.extend(members[:k])
    if not added:
        return dict(current), []
    version = int(current["version"]) + 1
    groups = dict(current["groups"])
    for g in added:
        groups[g] = {"class": fresh[g], "since_version": version}
    history = [*current["history"], {"version": version, "at": utc_now(), "added": sorted(added),
                                     "fraction": fraction}]
    return {"version": version, "groups": groups, "history": history}, sorted(added)


def groups_of_version(holdout: Mapping[str, Any], version: int) -> set[str]:
    """The holdout's groups as of ``version``."""
    return {g for g, info in (holdout.get("groups") or {}).items() if int(info["since_version"]) <= version}


__all__ = ["groups_of_version", "grow", "majority_labels"]
