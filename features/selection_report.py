"""The selection result on disk: `selection.json` (deterministic) and `mi.png`.

selection.json (format_version 1):
- `selected`: the final features, best-ranked first — candidate columns and
  OR-group names; `or_groups`: selected group -> its member columns;
  `thresholds`: continuous column -> z_t (z >= z_t is 1; every column with a split);
- `features`: per candidate `kind` (continuous | discrete), `rank` (by MI, 1 =
  most informative; null when not ranked), `chosen`, `reason` (selected,
  or_group, too_informative, below_top_n, low_support, no_split, no_values),
  `group`, `mutual_information` (nats), `counts` (flag × label rows), `support`
  (rows of the rarer flag value), `present`, `missing`; continuous ones add
  `threshold`, `gap`, `mode` (exact | bucketed), `distinct_values` (exact) or
  `buckets` (bucketed). A formed OR-group has an entry of kind or_group with its
  `members` and the statistics of the OR-ed flag;
- `rows` (clicked, conversions, unclicked_skipped), `label`, `policy` (the
  selection config and candidate roles used).

Same result -> byte-identical JSON: sorted keys, fixed indentation, statistics
already rounded by the policy, thresholds exact data values. Files are written
to a temporary name and renamed, so a crash never leaves a half-written result.
Paths may be local or any filesystem TensorFlow's gfile knows (gs://, ...).
"""
from __future__ import annotations

import io
import json
import os
import uuid
from typing import Any

import tensorflow as tf

from pfdx.features import selection_policy as policy

SELECTION_FILE = "selection.json"
CHART_FILE = "mi.png"

# Bar colours of the chart, by the feature's decision.
_COLOURS = {"selected": "#2e7d32", "or_group": "#81c784", "too_informative": "#c62828",
            "below_top_n": "#9e9e9e", "low_support": "#ffb300"}


def dumps(result: dict[str, Any]) -> str:
    return json.dumps(result, sort_keys=True, indent=2, allow_nan=False) + "\n"


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with tf.io.gfile.GFile(tmp, "wb") as f:
            f.write(data)
        tf.io.gfile.rename(tmp, path, overwrite=True)
    except BaseException:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)
        raise


def mi_chart(result: dict[str, Any]) -> bytes:
    """PNG bar chart of each ranked feature's (and formed group's) MI, coloured by decision."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Patch

    bars = sorted(((f["mutual_information"], name, f["reason"])
                   for name, f in result["features"].items()
                   if f["mutual_information"] is not None), reverse=True)
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(bars) + 1.6))
    if bars:
        # MI spans orders of magnitude (leaks vs noise): a log axis, zero drawn at a floor.
        floor = min([mi for mi, _, _ in bars if mi > 0] or [1e-6]) / 2
        ax.barh([f"{name}{' (OR)' if result['features'][name]['kind'] == policy.OR_GROUP else ''}"
                 for _, name, _ in bars], [max(mi, floor) for mi, _, _ in bars],
                color=[_COLOURS.get(reason, "#9e9e9e") for _, _, reason in bars])
        ax.invert_yaxis()
        ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "no candidate could be ranked", ha="center", transform=ax.transAxes)
    ax.set_xlabel(f"mutual information with {result['label']!r} (nats)")
    ax.set_title(f"Privileged feature selection: {len(result['selected'])} selected of "
                 f"{len(result['policy']['privileged_continuous']) + len(result['policy']['privileged_discrete'])}")
    ax.legend(handles=[Patch(color=c, label=r.replace("_", " ")) for r, c in _COLOURS.items()],
              loc="lower right", fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def write_report(result: dict[str, Any], json_path: str, chart_path: str) -> None:
    """Writes the JSON and the chart, each atomically (chart first: the JSON marks done)."""
    for path in (json_path, chart_path):
        tf.io.gfile.makedirs(os.path.dirname(path) or ".")
    _write_atomically(chart_path, mi_chart(result))
    _write_atomically(json_path, dumps(result).encode("utf-8"))


def load_selection(artifact_uri_or_path: str) -> dict[str, Any]:
    """A selection result (the format above) from a PrivilegedFeatureSelectionResult
    artifact directory or a selection JSON file."""
    path = artifact_uri_or_path
    if tf.io.gfile.isdir(path):
        path = os.path.join(path, SELECTION_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"no selection result at {path}")
    with tf.io.gfile.GFile(path) as f:
        result = json.loads(f.read())
    if result.get("format_version") != policy.FORMAT_VERSION:
        raise ValueError(f"{path}: selection format {result.get('format_version')!r}, this "
                         f"pfdx reads {policy.FORMAT_VERSION}")
    return result
