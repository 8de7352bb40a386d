"""Loopback stand-ins for TF Serving's REST and gRPC predict APIs, backed by a real
SavedModel. The tensorflow_model_server binary is not installable here; these
check the client/signature contract with the same request and response shapes."""
from __future__ import annotations

import json
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, HTTPServer

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc


class _Model:
    def __init__(self, saved_model_dir: str):
        self.loaded = tf.saved_model.load(saved_model_dir)

    def predict(self, signature_name: str, inputs: dict) -> dict:
        fn = self.loaded.signatures[signature_name]
        specs = fn.structured_input_signature[1]
        feed = {k: tf.constant(v, dtype=specs[k].dtype) for k, v in inputs.items()}
        return {k: v.numpy() for k, v in fn(**feed).items()}


def start_rest(saved_model_dir: str, model_name: str = "pfdx"):
    """Serves POST /v1/models/<name>:predict ("instances" row format). Returns (url, stop)."""
    model = _Model(saved_model_dir)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server API)
            if self.path != f"/v1/models/{model_name}:predict":
                return self._reply(404, {"error": f"Servable not found for request: {self.path}"})
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            instances = body["instances"]
            columns = {k: [row[k] for row in instances] for k in instances[0]}
            try:
                out = model.predict(body.get("signature_name", "serving_default"), columns)
            except (TypeError, ValueError, tf.errors.InvalidArgumentError) as e:
                return self._reply(400, {"error": str(e)})
            (values,) = out.values()  # single-output signature: bare values per instance
            self._reply(200, {"predictions": np.asarray(values).tolist()})

        def _reply(self, code, payload):
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server.shutdown


def start_grpc(saved_model_dir: str):
    """Serves PredictionService.Predict. Returns (target, stop)."""
    model = _Model(saved_model_dir)

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 (gRPC API)
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            out = model.predict(request.model_spec.signature_name or "serving_default", inputs)
            response = predict_pb2.PredictResponse()
            for k, v in out.items():
                response.outputs[k].CopyFrom(tf.make_tensor_proto(v))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return f"127.0.0.1:{port}", lambda: server.stop(0)
