"""What `pfdx run` shows: one line per component, and library output in a log file.

Without `-v`, everything the libraries write (TensorFlow's C++ start-up messages,
Beam worker warnings, TFX tracebacks of a first run's input resolution, Keras
progress) goes to a log file under the output root, at the file-descriptor level so
that C++ code and Beam's worker processes are caught too. The user sees a line per
finished component, read from MLMD while the run goes: its name, state (ran,
cached, failed), seconds and key figure; on a terminal, also which one is running.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from typing import Any, Iterator, TextIO

# MLMD execution states (metadata_store_pb2.Execution.State) as the user reads them.
_STATES = {3: "ran", 4: "failed", 5: "cached", 6: "failed"}  # COMPLETE, FAILED, CACHED, CANCELED
_RUNNING = 2


@contextlib.contextmanager
def library_output_to(path: str) -> Iterator[TextIO]:
    """Sends file descriptors 1 and 2 (Python, C++ and child processes alike) to the
    file `path` (appended) while the block runs; yields a stream to the original stdout."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        with output_to(log_fd) as console:
            yield console
    finally:
        os.close(log_fd)


@contextlib.contextmanager
def output_to(fd: int) -> Iterator[TextIO]:
    """Sends file descriptors 1 and 2 to `fd` while the block runs; yields a stream to
    the original stdout."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    console = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    try:
        yield console
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        console.close()
        for target, original in zip((1, 2), saved):
            os.dup2(original, target)
            os.close(original)


class ComponentLines:
    """Polls the MLMD store of a run in a thread and prints a line per component
    execution that finishes (newer than the store's executions when entered)."""

    def __init__(self, metadata_path: str, out: TextIO, interval: float = 1.0):
        self._path, self._out, self._interval = metadata_path, out, interval
        self._done: set[int] = set()
        self._first = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._status = ""  # the "running" line on a terminal
        self._tty = out.isatty()

    def __enter__(self) -> "ComponentLines":
        store = self._store()
        self._first = max((e.id for e in store.get_executions()), default=0) if store else 0
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._poll()  # the last component's line
        self._show_status("")

    def _store(self):
        from ml_metadata import metadata_store
        from tfx import v1 as tfx

        if not os.path.exists(self._path):
            return None
        return metadata_store.MetadataStore(
            tfx.orchestration.metadata.sqlite_metadata_connection_config(self._path))

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._poll()
            except Exception:  # noqa: BLE001  (a busy SQLite file: try again next tick)
                continue

    def _poll(self) -> None:
        store = self._store()
        if store is None:
            return
        running = []
        for execution in sorted(store.get_executions(), key=lambda e: e.id):
            if execution.id <= self._first or execution.id in self._done:
                continue
            name = _node_name(store, execution)
            seconds = (execution.last_update_time_since_epoch
                       - execution.create_time_since_epoch) / 1000
            state = _STATES.get(execution.last_known_state)
            if state is None:
                if execution.last_known_state == _RUNNING:
                    since = time.time() - execution.create_time_since_epoch / 1000
                    running.append(f"{name} running {since:.0f}s")
                continue
            self._done.add(execution.id)
            self._show_status("")
            if state != "failed":
                figure = _key_figure(store, execution)
            elif name.endswith("_resolver"):
                # TFX marks a resolver with nothing to resolve (a first run) failed,
                # and the run goes on without that input.
                state, figure = "ran", "none found"
            else:
                figure = ""
            print(f"{name:<34} {state:<7} {seconds:6.1f}s  {figure}".rstrip(), file=self._out)
        self._show_status(", ".join(running))

    def _show_status(self, text: str) -> None:
        if not self._tty or text == self._status:
            return
        self._out.write("\r" + text.ljust(len(self._status)) + ("\r" if not text else ""))
        self._out.flush()
        self._status = text


def _node_name(store, execution) -> str:
    for context in store.get_contexts_by_execution(execution.id):
        if store.get_context_types_by_id([context.type_id])[0].name == "node":
            return context.name.rsplit(".", 1)[-1]
    return execution.type


def _key_figure(store, execution) -> str:
    """The figure a user looks for in a component's outputs (MLMD properties)."""
    events = store.get_events_by_execution_ids([execution.id])
    ids = [e.artifact_id for e in events if e.type == e.OUTPUT]
    figures = []
    for artifact in store.get_artifacts_by_id(ids):
        props = {k: v.int_value if v.HasField("int_value") else v.string_value
                 for k, v in artifact.custom_properties.items()}
        if "rows_read" in props:
            figures.append(f"{props['rows_read']} rows read, {props['rows_used']} used, "
                           f"{props['rows_quarantined']} quarantined")
            folders = [k.split(":", 1)[1] for k in props if k.startswith("rows_subfolder:")]
            if folders:
                figures.append(f"subfolders not read: {', '.join(sorted(folders))}")
        if "num_selected" in props:
            figures.append(f"{props['num_selected']} privileged features selected")
        if "num_anomalies" in props:
            figures.append(f"{props['num_anomalies']} anomalies")
        kind = store.get_artifact_types_by_id([artifact.type_id])[0].name
        if kind == "ModelBlessing":
            figures.append("blessed" if props.get("blessed") else "not blessed")
        if kind == "PushedModel":
            figures.append("pushed" if props.get("pushed") else "not pushed")
        figures += _training_figure(artifact.uri)
    return "; ".join(figures)


def _training_figure(uri: str) -> list[str]:
    from pfdx.components.trainer import TRAINING_METRICS_FILE

    path = os.path.join(uri, TRAINING_METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        auc = json.load(f).get("student_auc")
    return [] if auc is None else [f"student AUC {auc:.4f} (eval)"]
