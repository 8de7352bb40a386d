"""`pfdx schedule`: the kfp client against a stub of the Kubeflow Pipelines REST API on loopback.

The stub implements only what the client calls (healthz, pipelines, upload, versions,
experiments, recurring runs), validates uploads as KFP does (a pipeline spec of
schema 2.1.0), and records every request for the assertions.
"""
import email
import email.policy
import http.server
import json
import threading
import urllib.parse

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2

from pfdx.config import load_config
from pfdx.pipeline import cli, kubeflow_compile, kubeflow_schedule

API = "/apis/v2beta1"


class _StubKfp(http.server.BaseHTTPRequestHandler):
    """One KFP API server; state lives on the server object."""

    def log_message(self, *args):  # keep the test output clean
        pass

    def _reply(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _request(self) -> tuple[str, dict, bytes]:
        url = urllib.parse.urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        self.server.requests.append((self.command, url.path, query, body))
        return url.path, query, body

    def _uploaded_spec(self, body: bytes) -> dict:
        message = email.message_from_bytes(
            f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body,
            policy=email.policy.HTTP)
        (part,) = [p for p in message.iter_parts()
                   if p.get_param("name", header="content-disposition") == "uploadfile"]
        spec = yaml.safe_load(part.get_payload(decode=True))
        parsed = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
        assert parsed.schema_version == "2.1.0", "KFP 2.x rejects other schema versions"
        self.server.uploads.append(spec)
        return spec

    def _filtered(self, items: list[dict], query: dict) -> list[dict]:
        (predicate,) = json.loads(query["filter"])["predicates"]
        return [i for i in items if i["display_name"] == predicate["stringValue"]]

    def do_GET(self):
        path, query, _ = self._request()
        s = self.server
        if path == f"{API}/healthz":
            return self._reply({"multi_user": False})
        if path == f"{API}/pipelines":
            return self._reply({"pipelines": self._filtered(s.pipelines, query)})
        if path == f"{API}/experiments":
            return self._reply({"experiments": self._filtered(s.experiments, query)})
        if path.startswith(f"{API}/pipelines/") and path.endswith("/versions"):
            pipeline_id = path.split("/")[-2]
            return self._reply({"pipeline_versions": [
                v for v in s.versions if v["pipeline_id"] == pipeline_id]})
        self._reply({"error": f"stub: no GET {path}"}, 404)

    def do_POST(self):
        path, query, body = self._request()
        s = self.server
        if path == f"{API}/pipelines/upload":
            self._uploaded_spec(body)
            pipeline = {"pipeline_id": f"p{len(s.pipelines)}", "display_name": query["name"]}
            s.pipelines.append(pipeline)
            s.versions.append({"pipeline_id": pipeline["pipeline_id"],
                               "pipeline_version_id": f"v{len(s.versions)}",
                               "display_name": query["name"]})
            return self._reply(pipeline)
        if path == f"{API}/pipelines/upload_version":
            self._uploaded_spec(body)
            version = {"pipeline_id": query["pipelineid"],
                       "pipeline_version_id": f"v{len(s.versions)}", "display_name": query["name"]}
            s.versions.append(version)
            return self._reply(version)
        if path == f"{API}/experiments":
            experiment = dict(json.loads(body), experiment_id=f"e{len(s.experiments)}")
            s.experiments.append(experiment)
            return self._reply(experiment)
        if path == f"{API}/recurringruns":
            run = dict(json.loads(body), recurring_run_id=f"r{len(s.recurring_runs)}")
            s.recurring_runs.append(run)
            return self._reply(run)
        self._reply({"error": f"stub: no POST {path}"}, 404)


@pytest.fixture
def kfp_api():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StubKfp)
    server.requests, server.uploads = [], []
    server.pipelines, server.versions, server.experiments, server.recurring_runs = [], [], [], []
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("kfp") / "pipeline.json"
    config = load_config(None, [
        "kubeflow.image=europe-docker.pkg.dev/acme/ml/pfdx:0123abc",
        "kubeflow.pipeline_root=gs://acme-ml/pfdx", "kubeflow.data_path=gs://acme-ml/logs"])
    kubeflow_compile.compile_pipeline(config, str(path))
    return str(path)


def test_schedule_uploads_the_spec_and_creates_a_daily_recurring_run(kfp_api, spec_path, capsys):
    host = f"http://127.0.0.1:{kfp_api.server_port}"
    argv = ["schedule", "--host", host, "--cron", "0 3 * * *", "--spec", spec_path,
            "--param", "epochs=5", "--param", "data_path=gs://acme-ml/logs/2025-06-01",
            "--namespace", "ads-team"]
    assert cli.main(argv) == 0
    (run,) = kfp_api.recurring_runs
    (pipeline,) = kfp_api.pipelines
    compiled = json.load(open(spec_path))
    assert kfp_api.uploads == [compiled["pipelineSpec"]]
    # KFP reads cron with a leading seconds field: 03:00 daily, not minute 3 of every hour.
    assert run["trigger"] == {"cron_schedule": {"cron": "0 0 3 * * *"}}
    assert run["pipeline_version_reference"] == {"pipeline_id": pipeline["pipeline_id"],
                                                 "pipeline_version_id": "v0"}
    assert run["runtime_config"] == {
        "pipeline_root": "gs://acme-ml/pfdx",
        "parameters": {"data_path": "gs://acme-ml/logs/2025-06-01", "epochs": 5,
                       "strategy": "ha_pfd_v2", "kd_gamma": 1.0, "kd_lam": 10.0}}
    assert run["experiment_id"] == kfp_api.experiments[0]["experiment_id"]
    assert kfp_api.experiments[0]["display_name"] == pipeline["display_name"] == "pfdx"
    assert kfp_api.experiments[0]["namespace"] == "ads-team"
    assert (run["mode"], run["max_concurrency"], run["no_catchup"]) == ("ENABLE", 1, True)
    assert "recurring run r0" in capsys.readouterr().out

    # Scheduling a recompiled spec again adds a version to the same pipeline.
    assert cli.main(["schedule", "--host", host, "--cron", "@daily", "--spec", spec_path]) == 0
    assert len(kfp_api.pipelines) == 1 and len(kfp_api.uploads) == 2
    second = kfp_api.recurring_runs[1]
    assert second["pipeline_version_reference"]["pipeline_version_id"] == "v1"
    assert second["runtime_config"]["parameters"]["epochs"] == 10  # the compiled default
    assert second["trigger"]["cron_schedule"]["cron"] == "@daily"


@pytest.mark.parametrize("argv, message", [
    (["--cron", "0 3 * *"], "expected 5 fields"),
    (["--param", "epoch=5"], "--param epoch: not a run parameter of this pipeline; known: "
                             "data_path, epochs, kd_gamma, kd_lam, strategy"),
    (["--param", "epochs=many"], "--param epochs=many: expected int"),
    (["--param", "epochs"], "expected NAME=VALUE"),
], ids=["cron", "unknown-param", "param-type", "param-syntax"])
def test_bad_input_is_refused_before_contacting_kfp(kfp_api, spec_path, capsys, argv, message):
    base = {"--host": f"http://127.0.0.1:{kfp_api.server_port}", "--cron": "0 3 * * *",
            "--spec": spec_path}
    base.update(zip(argv[::2], argv[1::2]))
    assert cli.main(["schedule", *[x for kv in base.items() for x in kv]]) == 2
    assert message in capsys.readouterr().err
    assert kfp_api.requests == []


def test_kfp_cron_keeps_six_field_expressions_and_descriptors():
    assert kubeflow_schedule.kfp_cron("30 0 3 * * 1-5") == "30 0 3 * * 1-5"
    assert kubeflow_schedule.kfp_cron("@every 6h") == "@every 6h"
