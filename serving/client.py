"""A small client for a TF Serving deployment of the pfdx student.

- REST (`rest_predict`): POST /v1/models/<name>[/versions/<v>]:predict with the
  "instances" JSON format on the raw-tensor signature (one named value per
  regular feature per instance).
- gRPC (`grpc_predict`): PredictionService.Predict with serialized tf.Examples on
  `serving_default`, via tensorflow-serving-api.

Start the real server on the pushed directory (binary or Docker image, not
installable from PyPI):
    tensorflow_model_server --port=8500 --rest_api_port=8501 \
        --model_name=pfdx --model_base_path=$PWD/outputs/serving \
        --enable_model_warmup=true
    docker run -p 8500:8500 -p 8501:8501 -v $PWD/outputs/serving:/models/pfdx \
        -e MODEL_NAME=pfdx tensorflow/serving:2.16.1
"""
from __future__ import annotations

import json
import re
import urllib.request
from typing import Any, Iterable, Mapping

from pfdx.serving.export import EXAMPLES_INPUT, OUTPUT_KEY, RAW_SIGNATURE
from pfdx.serving.parsing import NUMBER


class ServingError(RuntimeError):
    """TF Serving answered with an error; the message carries its text."""


def instances_from_examples(serialized_examples: Iterable[bytes],
                            regular_features: Iterable[str],
                            categorical: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """REST "instances" (feature -> value) from logged tf.Examples: replays a log
    against a server. Missing features are left out, as an ad server would omit them.

    `predict_raw` takes strings for categoricals and floats for numerics, and TF
    Serving's JSON decoder wants a JSON string for a string input. With
    `categorical` (the regular categorical names) each value is converted the way
    `serving_default` converts a tf.Example feature (`parsing.py`): a categorical's
    int 3 or float 3.0 -> "3", a numeric's int or text -> float ("" is missing). Without
    it the values are passed as the examples hold them (ExampleGen's examples already
    hold the canonical types)."""
    import tensorflow as tf

    names = tuple(regular_features)
    text = None if categorical is None else frozenset(categorical)
    instances = []
    for serialized in serialized_examples:
        feature = tf.train.Example.FromString(serialized).features.feature
        row = {}
        for name in names:
            if name not in feature:
                continue
            f = feature[name]
            kind = f.WhichOneof("kind")
            if kind is None:
                continue  # no list set: absent, as parse_example reads it
            value = getattr(f, kind).value[0]
            if kind == "bytes_list":
                value = value.decode("utf-8")
            if text is not None:
                value = _canonical(name, value, name in text)
                if value is None:
                    continue
            row[name] = value
        instances.append(row)
    return instances


def _canonical(name: str, value: Any, categorical: bool) -> Any:
    """`value` in `predict_raw`'s type (str for a categorical, float for a numeric);
    None for empty numeric text (a missing value)."""
    if categorical:
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"feature {name!r}: the float {value!r} in a categorical "
                                 "feature has no single text form; send its text")
            value = int(value)
        return str(value)
    if isinstance(value, str):
        if not value.strip():
            return None
        if not re.fullmatch(NUMBER, value):
            raise ValueError(f"feature {name!r}: {value!r} is not a number")
    return float(value)


def rest_request_body(instances: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The REST predict body for the raw-tensor signature (JSON-serialisable)."""
    return {"signature_name": RAW_SIGNATURE, "instances": [dict(i) for i in instances]}


def rest_predict(host: str, instances: Iterable[Mapping[str, Any]], model_name: str = "pfdx",
                 version: int | None = None, timeout: float = 10.0,
                 output: str = OUTPUT_KEY) -> list[float]:
    """The `output` probabilities (CVR; "ctr" where served) for `instances` (dicts of
    regular feature values) over REST."""
    path = f"/v1/models/{model_name}" + (f"/versions/{version}" if version else "") + ":predict"
    body = json.dumps(rest_request_body(instances)).encode("utf-8")
    request = urllib.request.Request(host.rstrip("/") + path, data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = json.loads(response.read())
    except urllib.error.HTTPError as e:
        raise ServingError(f"{host}{path}: HTTP {e.code}: {e.read().decode('utf-8', 'replace')}") from None
    if "error" in payload:
        raise ServingError(f"{host}{path}: {payload['error']}")
    # Single-output signatures answer with a bare list per instance.
    return [float(p[output] if isinstance(p, dict) else p) for p in payload["predictions"]]


def grpc_predict(target: str, serialized_examples: list[bytes], model_name: str = "pfdx",
                 timeout: float = 10.0, output: str = OUTPUT_KEY) -> list[float]:
    """The `output` probabilities (CVR; "ctr" where served) for serialized tf.Examples
    over gRPC (`serving_default`)."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = "serving_default"
    request.inputs[EXAMPLES_INPUT].CopyFrom(tf.make_tensor_proto(serialized_examples, dtype=tf.string))
    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as e:
            raise ServingError(f"{target}: {e.code().name}: {e.details()}") from None
    return [float(x) for x in tf.make_ndarray(response.outputs[output]).reshape(-1)]
