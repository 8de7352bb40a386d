"""Warm start: a run's joint models start from the last blessed run's (issue 20).

The exported student (`Format-Serving/`) holds the student only, so each run also
saves what a next run needs beside it, under its Model artifact:
- `joint/<strategy>/state*`: a TF checkpoint of every weight of the joint model it
  trained for `<strategy>` (teacher, student, tables, mapping nets, calibration), both
  optimizers' Adam slots and step counters; `manifest.json` names each entry by its
  object path in the model (`student/embeddings/tables/ad_id/embeddings`,
  `teacher_optimizer/m/teacher_tower/out/kernel`) and records the model values the
  run chose (tuning) and the train files it read;
- `joint/tokens/<vocabulary file>`: the token list of each vocabulary-encoded
  feature (the Transform's asset, row order);
- `joint/selection.json`: the privileged selection the teacher's inputs encode.

Restoring into a model built for this run (`Restorer`), variable by variable:
1. a side it must not take (the teacher side after a changed selection), or a path
   the base lacks: fresh;
2. an embedding table whose feature has a token list in both runs: `remap_rows`;
3. the same shape: copied (a hashed id keeps its bucket while its table's rows stay,
   a quantile bucket its index);
4. a hashed feature's table that grew by a whole multiple (its rows are sized to the
   data, features/transform.py `hash_rows`): tiled, `tile_rows`;
5. another shape: fresh, and logged.
Each variable's Adam slots follow it (fresh rows and fresh variables: zero moments);
the step counters are restored, so Adam's bias correction continues.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import pfdx  # noqa: F401  (Keras 2 flag before TensorFlow)
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from pfdx.config import ConfigError, PipelineConfig
from pfdx.features import selection_report, transform
from pfdx.models.layers import FeatureEmbeddings
from pfdx.models.model import JointModel
from pfdx.models.optimizers import LazyAdam

JOINT_DIR = "joint"
STATE_PREFIX = "state"
MANIFEST_FILE = "manifest.json"
TOKENS_DIR = "tokens"
OPTIMIZERS = ("optimizer", "teacher_optimizer")
# Adam's slots by the names `add_variable_from_reference` gives them.
SLOTS = (("m", "_momentums"), ("v", "_velocities"))


def model_dir(serving_model_dir: str) -> str:
    """The Model artifact's folder of a TFX serving model dir (`<uri>/Format-Serving`)."""
    return os.path.dirname(serving_model_dir.rstrip("/"))


def variables(model: JointModel) -> dict[str, tf.Variable]:
    """Object path -> variable: every weight of `model` (first path found, breadth
    first), not its metrics' counters nor its optimizers (see `state`)."""
    out, seen, queue = {}, set(), [("", model)]
    while queue:
        path, obj = queue.pop(0)
        for name, child in tf.train.TrackableView(obj).children(obj).items():
            if isinstance(child, (tf.keras.metrics.Metric, tf.keras.optimizers.Optimizer)):
                continue
            child_path = f"{path}/{name}" if path else name
            if id(child) in seen:
                continue
            seen.add(id(child))
            if isinstance(child, tf.Variable):
                out[child_path] = child
            else:
                queue.append((child_path, child))
    return out


def _slots(model: JointModel, optimizer_name: str,
           weights: Mapping[str, tf.Variable]) -> dict[str, tf.Variable]:
    """`<optimizer>/<slot>/<weight path>` -> slot variable, for the weights the
    optimizer steps (it is built), and `<optimizer>/iterations`."""
    opt = getattr(model, optimizer_name)
    if not isinstance(opt, tf.keras.optimizers.Adam):
        raise TypeError(f"warm start saves Adam's slots; {optimizer_name} is {type(opt).__name__}")
    out = {f"{optimizer_name}/iterations": opt.iterations}
    index = getattr(opt, "_index_dict", {})
    for path, weight in weights.items():
        i = index.get(opt._var_key(weight))
        if i is not None:
            for slot, attr in SLOTS:
                out[f"{optimizer_name}/{slot}/{path}"] = getattr(opt, attr)[i]
    return out


def state(model: JointModel) -> dict[str, tf.Variable]:
    """Everything a warm start restores: weights and both optimizers' state."""
    weights = variables(model)
    out = dict(weights)
    for name in OPTIMIZERS:
        out.update(_slots(model, name, weights))
    return out


def table_features(model: JointModel) -> dict[Any, str]:
    """Embedding table variable (`.ref()`) -> the feature whose ids index its rows."""
    return {layer.embeddings.ref(): name for module in model.submodules
            if isinstance(module, FeatureEmbeddings) for name, layer in module.tables.items()}


def teacher_side(model: JointModel) -> set:
    """`.ref()`s of what reads the privileged inputs' meaning: the teacher's tower and
    tables and the strategy's own nets (mapping nets, discriminators), not the
    student's head the strategy may have built."""
    if not model.has_teacher:
        return set()
    student = {v.ref() for v in model.student.variables}
    return ({v.ref() for v in model.teacher_variables()}
            | {v.ref() for v in model.strategy.variables if v.ref() not in student})


def remap_rows(old: np.ndarray, fresh: np.ndarray, old_tokens: Sequence[bytes],
               new_tokens: Sequence[bytes]) -> tuple[np.ndarray, dict[str, int]]:
    """A vocabulary table's rows for the new token list, from the old table: a token
    both lists hold keeps its row, a new token keeps its `fresh` row; the OOV rows
    after the tokens are copied when both tables have as many (an unseen id hashes
    into them by their count), else fresh. Returns the rows and counts
    (kept, new, dropped tokens; oov rows copied)."""
    out = np.array(fresh, copy=True)
    where = {token: i for i, token in enumerate(old_tokens)}
    pairs = [(i, where[t]) for i, t in enumerate(new_tokens) if t in where]
    if pairs:
        new_rows, old_rows = map(list, zip(*pairs))
        out[new_rows] = old[old_rows]
    old_oov, new_oov = len(old) - len(old_tokens), len(fresh) - len(new_tokens)
    copied_oov = new_oov if old_oov == new_oov else 0
    out[len(new_tokens):len(new_tokens) + copied_oov] = old[len(old_tokens):]
    return out, {"kept": len(pairs), "new": len(new_tokens) - len(pairs),
                 "dropped": len(old_tokens) - len(pairs), "oov_copied": copied_oov}


def tile_rows(old: np.ndarray, shape: Sequence[int]) -> np.ndarray | None:
    """A hashed table of `shape` from the `old` table: an id hashes to its
    Fingerprint64 mod the rows, so when the old row count divides the new one, new row
    r holds what old row r mod the old count held -- every id keeps its embedding. None
    when it does not divide (a shrunk table, or one that reached `hash_buckets`) or a
    row's shape changed."""
    rows, row_shape = shape[0], tuple(shape[1:])
    if rows % len(old) or old.shape[1:] != row_shape:
        return None
    return np.tile(old, (rows // len(old),) + (1,) * len(row_shape))


def vocabulary_tokens(tf_transform_output: tft.TFTransformOutput,
                      features: Iterable[str]) -> dict[str, str]:
    """Feature -> its vocabulary file, for the features the Transform encoded with a
    vocabulary (none when every id is hashed)."""
    files = {f: tf_transform_output.vocabulary_file_by_name(transform.VOCABULARY_PREFIX + f)
             for f in features}
    return {f: path for f, path in files.items() if path}


def _read_tokens(path: str) -> list[bytes]:
    with tf.io.gfile.GFile(path, "rb") as f:
        return [line.rstrip(b"\n") for line in f]


def selection_key(selection: Mapping[str, Any]) -> dict[str, Any]:
    """What of a selection the teacher's inputs mean: the features, their OR-group
    members and the thresholds of those members."""
    members = {f: selection["or_groups"].get(f, [f]) for f in selection["selected"]}
    return {"selected": list(selection["selected"]), "members": members,
            "thresholds": {m: selection["thresholds"].get(m) for ms in members.values()
                           for m in ms}}


def save(directory: str, strategy: str, model: JointModel, params: Mapping[str, Any],
         train_files: Sequence[str]) -> None:
    """`model`'s state to `<directory>/joint/<strategy>/`."""
    side = os.path.join(directory, JOINT_DIR, strategy)
    tf.io.gfile.makedirs(side)
    entries = state(model)
    names = {path: f"v{i}" for i, path in enumerate(entries)}
    tf.train.Checkpoint(**{names[p]: v for p, v in entries.items()}).write(
        os.path.join(side, STATE_PREFIX))
    manifest = {"strategy": strategy, "params": dict(params), "train_files": list(train_files),
                "entries": {p: {"key": names[p], "shape": list(v.shape)}
                            for p, v in entries.items()}}
    with tf.io.gfile.GFile(os.path.join(side, MANIFEST_FILE), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)


def save_inputs(directory: str, tokens: Mapping[str, str], selection_path: str | None) -> None:
    """The token lists (`vocabulary_tokens`) and the selection beside the joint models."""
    joint = os.path.join(directory, JOINT_DIR)
    tf.io.gfile.makedirs(os.path.join(joint, TOKENS_DIR))
    for path in tokens.values():
        tf.io.gfile.copy(path, os.path.join(joint, TOKENS_DIR, os.path.basename(path)),
                         overwrite=True)
    if selection_path is not None and tf.io.gfile.exists(selection_path):
        tf.io.gfile.copy(selection_path, os.path.join(joint, selection_report.SELECTION_FILE),
                         overwrite=True)


def base_selection(base_dir: str) -> dict[str, Any] | None:
    """The selection saved beside a base model's joint models (None: none saved)."""
    path = os.path.join(base_dir, JOINT_DIR, selection_report.SELECTION_FILE)
    return selection_report.load_selection(path) if tf.io.gfile.exists(path) else None


@dataclasses.dataclass
class Plan:
    """What this run takes of the base: per strategy the base's saved model values
    (`params`), whether the teacher side is taken, and why not where it is not."""

    base_dir: str | None
    params: dict[str, dict[str, Any]]
    teacher: bool
    reason: str

    def summary(self) -> dict[str, Any]:
        return {"base_model": self.base_dir, "warm": sorted(self.params),
                "teacher": self.teacher, "reason": self.reason}


def plan(base_serving_dir: str | None, train_files: Sequence[str],
         selection: Mapping[str, Any] | None) -> Plan:
    """Which of the base's joint models this run warm-starts from. Cold when there is
    no base (a first run, or warm start off), the base saved no joint model, or it
    trained on these very examples (a re-run of a span: training on them twice is
    not continuing); the teacher side is cold when the selection changed."""
    if base_serving_dir is None:
        return Plan(None, {}, False, "no blessed base model (a first run, or warm_start "
                    "off): cold start")
    base = model_dir(base_serving_dir)
    joint = os.path.join(base, JOINT_DIR)
    manifests = {}
    for side in (tf.io.gfile.listdir(joint) if tf.io.gfile.isdir(joint) else []):
        path = os.path.join(joint, side.rstrip("/"), MANIFEST_FILE)
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                manifests[side.rstrip("/")] = json.load(f)
    if not manifests:
        return Plan(base, {}, False, f"the base model {base} saved no joint model: cold start")
    if any(m["train_files"] == list(train_files) for m in manifests.values()):
        return Plan(base, {}, False, "the base model trained on these examples (a re-run of "
                    "its span): cold start")
    params = {side: m["params"] for side, m in manifests.items()}
    unread = _unreadable(params)
    if unread:
        return Plan(base, {}, False, f"the base model {base} recorded its chosen values "
                    f"under a setting this version does not read ({unread}): cold start")
    before = base_selection(base)
    if selection is None or before is None or selection_key(before) != selection_key(selection):
        return Plan(base, params, False, "warm start; the privileged selection changed "
                    f"({_selection_change(before, selection)}): the teacher side starts cold")
    return Plan(base, params, True, "warm start of teacher and student")


def _selection_change(before, now) -> str:
    if before is None or now is None:
        return "the base saved none" if before is None else "this run has none"
    a, b = selection_key(before), selection_key(now)
    if a["selected"] != b["selected"]:
        return f"selected {a['selected']} -> {b['selected']}"
    return f"thresholds {a['thresholds']} -> {b['thresholds']}"


def _unreadable(params: Mapping[str, Mapping[str, Any]]) -> str | None:
    """Why a base's chosen values do not make a config here (a base saved before a
    setting moved, e.g. `lam` -> `kd.lam`), or None: its models cannot be rebuilt."""
    for values in params.values():
        try:
            PipelineConfig().with_model(values)
        except ConfigError as e:
            return str(e)
    return None


class Restorer:
    """Restores a freshly built model from the base's joint model of its strategy
    (`Plan.params` names those), mapping tables by token (`tokens`: feature ->
    vocabulary file, this run's) and tiling the grown tables of `hashed` features.
    Records per strategy what it did (`log`)."""

    def __init__(self, plan_: Plan, tokens: Mapping[str, str], hashed: Iterable[str] = (),
                 log: Callable[[str], None] = logging.info):
        self.plan = plan_
        self.tokens = {f: _read_tokens(p) for f, p in tokens.items()}
        self.hashed = set(hashed)
        self.log = log
        self.restored: dict[str, dict[str, Any]] = {}

    def __call__(self, config: PipelineConfig, model: JointModel) -> None:
        name = config.model.strategy
        if name not in self.plan.params:
            return
        self.restored[name] = self._restore(name, model, teacher_side(model))

    def summary(self, trained: Mapping[str, tuple[JointModel, Any]]) -> dict[str, Any]:
        """training_metrics.json's `warm_start`: the plan, what each restore did, and
        per strategy the student optimizer's steps before (restored) and after."""
        steps = {name: {"before": self.restored.get(name, {}).get("steps", {}).get("optimizer", 0),
                        "after": int(model.optimizer.iterations.numpy())}
                 for name, (model, _) in trained.items()}
        return {**self.plan.summary(), "restored": self.restored, "steps": steps}

    def _restore(self, name: str, model: JointModel, teacher: set) -> dict[str, Any]:
        side = os.path.join(self.plan.base_dir, JOINT_DIR, name)
        with tf.io.gfile.GFile(os.path.join(side, MANIFEST_FILE)) as f:
            entries = json.load(f)["entries"]
        reader = tf.train.load_checkpoint(os.path.join(side, STATE_PREFIX))
        old_tokens = {f: _read_tokens(p) for f, p in self._base_tokens().items()}
        features = table_features(model)
        slots = {n: _slots(model, n, variables(model)) for n in OPTIMIZERS}
        fresh, tables, tiled = [], {}, {}

        def value(path):
            return reader.get_tensor(f"{entries[path]['key']}/.ATTRIBUTES/VARIABLE_VALUE")

        for path, var in variables(model).items():
            if var.ref() in teacher and not self.plan.teacher:
                fresh.append(f"{path} (teacher side)")
                continue
            if path not in entries:
                fresh.append(f"{path} (not in the base)")
                continue
            pairs = [(var, path)] + [(slots[o][k], k) for o in OPTIMIZERS for s, _ in SLOTS
                                     if (k := f"{o}/{s}/{path}") in slots[o] and k in entries]
            feature = features.get(var.ref())
            if feature in self.tokens and feature in old_tokens:
                for target, key in pairs:
                    rows, counts = remap_rows(value(key), target.numpy(), old_tokens[feature],
                                              self.tokens[feature])
                    target.assign(rows)
                tables[path] = counts
            elif list(var.shape) == entries[path]["shape"]:
                for target, key in pairs:
                    target.assign(value(key))
            elif feature in self.hashed and (
                    grown := tile_rows(value(path), var.shape)) is not None:
                var.assign(grown)
                for target, key in pairs[1:]:  # its Adam moments
                    target.assign(tile_rows(value(key), var.shape))
                tiled[path] = [entries[path]["shape"][0], var.shape[0]]
            else:
                fresh.append(f"{path} (shape {entries[path]['shape']} -> {list(var.shape)})")
        steps = {}
        for o in OPTIMIZERS:
            key = f"{o}/iterations"
            if key in entries and (o == "optimizer" or self.plan.teacher):
                slots[o][key].assign(value(key))
            steps[o] = int(slots[o][key].numpy())
            if isinstance(getattr(model, o), LazyAdam):  # saved caught up, at that step
                getattr(model, o).mark_caught_up()
        for line in fresh:
            self.log(f"warm start {name}: fresh {line}")
        for path, counts in tables.items():
            self.log(f"warm start {name}: {path} remapped by token {counts}")
        for path, (before, after) in tiled.items():
            self.log(f"warm start {name}: {path} tiled from {before} to {after} rows")
        return {"fresh": fresh, "remapped": tables, "tiled": tiled, "steps": steps}

    def _base_tokens(self) -> dict[str, str]:
        folder = os.path.join(self.plan.base_dir, JOINT_DIR, TOKENS_DIR)
        prefix = transform.VOCABULARY_PREFIX
        names = tf.io.gfile.listdir(folder) if tf.io.gfile.isdir(folder) else []
        return {n[len(prefix):]: os.path.join(folder, n) for n in names if n.startswith(prefix)}
