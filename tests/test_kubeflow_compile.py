"""`pfdx compile-kubeflow`: the KFP v2 spec of the local DAG, with the cluster settings."""
import json

import pytest
import yaml
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import v1 as tfx
from tfx.components.example_gen.component import FileBasedExampleGen

from pfdx.config import ConfigError, load_config
from pfdx.pipeline import cli, dag, kubeflow_compile, kubeflow_params

IMAGE = "europe-docker.pkg.dev/acme/ml/pfdx:0123abc"
DATAFLOW = ["--project=acme-ml", "--region=europe-west4", "--temp_location=gs://acme-ml/tmp"]
SETTINGS = ["kubeflow.pipeline_root=gs://acme-ml/pfdx", "kubeflow.data_path=gs://acme-ml/logs",
            "kubeflow.trainer_gpus=2", "kubeflow.gpu_type=NVIDIA_TESLA_T4", "model.epochs=3"]
RUN_PARAMETERS = {"data_path": "STRING", "strategy": "STRING", "epochs": "NUMBER_INTEGER",
                  "kd_gamma": "NUMBER_DOUBLE", "kd_lam": "NUMBER_DOUBLE"}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The PipelineJob JSON written by the CLI, as a platform engineer would run it."""
    out = tmp_path_factory.mktemp("kfp") / "pipeline.json"
    argv = ["compile-kubeflow", "--out", str(out), "--image", IMAGE,
            "--beam-runner", "DataflowRunner"]
    argv += [f"--beam-arg={flag}" for flag in DATAFLOW]
    argv += [arg for setting in SETTINGS for arg in ("--set", setting)]
    assert cli.main(argv) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def local_components(tmp_path_factory):
    """The local DAG's components, in create_components order, with their upstream nodes."""
    root = tmp_path_factory.mktemp("local")
    components = dag.create_components(load_config(None, SETTINGS), str(root / "logs"),
                                       str(root / "serving"))
    tfx.dsl.Pipeline(pipeline_name="local", pipeline_root=str(root), components=components)
    return components


def _spec(job) -> dict:
    return job["pipelineSpec"]


def _tasks_of(node_id: str, tasks) -> list[str]:
    # A Resolver compiles to one resolver task per input: "<id>-<input>-resolver".
    return [t for t in tasks if t == node_id or t.startswith(node_id + "-")]


def _executor_label(job, task: str) -> str:
    component = _spec(job)["root"]["dag"]["tasks"][task]["componentRef"]["name"]
    return _spec(job)["components"][component]["executorLabel"]


def _only(components, cls) -> str:
    (node_id,) = [c.id for c in components if isinstance(c, cls)]
    return node_id


def test_spec_parses_with_the_kfp_sdk(job):
    import kfp.components

    json_format.ParseDict(job, pipeline_spec_pb2.PipelineJob())
    spec = json_format.ParseDict(_spec(job), pipeline_spec_pb2.PipelineSpec())
    assert spec.schema_version == "2.1.0"  # the only schema Kubeflow Pipelines 2.x accepts
    loaded = kfp.components.load_component_from_text(yaml.safe_dump(_spec(job)))
    assert loaded.name == "pfdx"
    assert sorted(loaded.component_spec.inputs) == sorted(RUN_PARAMETERS)


def test_every_local_component_in_topological_order(job, local_components):
    tasks = _spec(job)["root"]["dag"]["tasks"]
    ids = [c.id for c in local_components]
    task_to_id = {t: node_id for node_id in ids for t in _tasks_of(node_id, tasks)}
    assert all(_tasks_of(node_id, tasks) for node_id in ids), (ids, sorted(tasks))
    # The only Kubeflow-only task feeds the run's hyperparameters to the Trainer.
    assert set(tasks) - set(task_to_id) == {kubeflow_params.STEP_ID}
    for position, component in enumerate(local_components):
        upstream = {task_to_id[d] for t in _tasks_of(component.id, tasks)
                    for d in tasks[t].get("dependentTasks", []) if d != kubeflow_params.STEP_ID}
        assert upstream == {u.id for u in component.upstream_nodes}, component.id
        assert all(ids.index(u) < position for u in upstream), (component.id, upstream)


def test_image_trainer_gpus_and_beam_args(job, local_components):
    executors = _spec(job)["deploymentSpec"]["executors"]
    containers = {label: e["container"] for label, e in executors.items() if "container" in e}
    assert containers and {c["image"] for c in containers.values()} == {IMAGE}
    trainer = _executor_label(job, _only(local_components, tfx.components.Trainer))
    assert containers[trainer]["resources"] == {
        "accelerator": {"type": "NVIDIA_TESLA_T4", "count": "2"}}
    assert [label for label, c in containers.items() if "resources" in c] == [trainer]
    example_gen = containers[_executor_label(job, _only(local_components, FileBasedExampleGen))]
    expected = ["--runner=DataflowRunner", f"--sdk_container_image={IMAGE}", *DATAFLOW]
    # ExampleGen's Beam job and its driver (which resolves the input files) both get them.
    for args in (example_gen["args"], example_gen["lifecycle"]["preCacheCheck"]["args"]):
        assert args[-len(expected):] == expected


def test_run_parameters_default_to_the_config_and_reach_their_components(job, local_components):
    root = _spec(job)["root"]
    assert {k: v["parameterType"] for k, v in root["inputDefinitions"]["parameters"].items()} \
        == RUN_PARAMETERS
    assert job["runtimeConfig"]["parameterValues"] == {
        "data_path": "gs://acme-ml/logs", "strategy": "ha_pfd_v2", "epochs": 3, "kd_gamma": 1.0,
        "kd_lam": 10.0}
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://acme-ml/pfdx"
    tasks = root["dag"]["tasks"]
    example_gen = tasks[_only(local_components, FileBasedExampleGen)]["inputs"]["parameters"]
    assert example_gen["input_base"] == {"componentInputParameter": "data_path"}
    step = tasks[kubeflow_params.STEP_ID]["inputs"]["parameters"]
    assert step == {name: {"componentInputParameter": name}
                    for name in kubeflow_params.HYPERPARAMETERS}
    trainer = tasks[_only(local_components, tfx.components.Trainer)]["inputs"]["artifacts"]
    assert trainer["hyperparameters"] == {"taskOutputArtifact": {
        "outputArtifactKey": "hyperparameters", "producerTask": kubeflow_params.STEP_ID}}


def test_the_validation_gate_precedes_whatever_reads_examples_for_training(job):
    tasks = _spec(job)["root"]["dag"]["tasks"]
    for consumer in ("PrivilegedFeatureSelection", "PrivilegedTransform"):
        assert "ValidationGate" in tasks[consumer]["dependentTasks"], consumer
    resolver = "latest_validated_schema_resolver"
    assert tasks["ValidationGate"]["inputs"]["artifacts"]["baseline"] == {"taskOutputArtifact": {
        "outputArtifactKey": "schema", "producerTask": resolver}}
    # TFX's v2 compiler resolves by type alone: the newest Schema of the metadata store.
    queries = _spec(job)["deploymentSpec"]["executors"][_executor_label(job, resolver)]
    assert queries["resolver"]["outputArtifactQueries"]["schema"]["filter"] == \
        'schema_title="tfx.Schema" AND state=LIVE'


def test_trainer_applies_what_the_hyperparameters_step_writes(tmp_path):
    from tfx.utils import io_utils

    from pfdx.components import trainer

    artifact = tfx.types.standard_artifacts.HyperParameters()
    artifact.uri = str(tmp_path)
    executor = kubeflow_params.RunHyperparameters.EXECUTOR_SPEC.executor_class()
    executor.Do({}, {"hyperparameters": [artifact]},
                {"strategy": "kd", "epochs": 7, "kd_gamma": 2.0, "kd_lam": 0.5})
    # What TFX's Trainer executor does with its `hyperparameters` input ...
    values = json.loads(io_utils.read_string_file(io_utils.get_only_uri_in_dir(str(tmp_path))))
    # ... and what the run_fn makes of it.
    config = trainer._config(tfx.components.FnArgs(
        hyperparameters=values, custom_config=trainer.trainer_custom_config(load_config())))
    m = config.model
    assert values == {"strategy": "kd", "epochs": 7, "kd.gamma": 2.0, "kd.lam": 0.5}
    assert (m.strategy, m.epochs, m.kd.gamma, m.kd.lam) == ("kd", 7, 2.0, 0.5)


def test_run_parameters_cannot_switch_to_a_strategy_the_compiled_dag_cannot_feed():
    from pfdx.components import trainer

    custom = trainer.trainer_custom_config(load_config())  # compiled for ha_pfd_v2
    for strategy in ("taml", "ukd"):
        with pytest.raises(ConfigError, match=f"strategy='{strategy}' needs another pipeline"):
            trainer._config(tfx.components.FnArgs(hyperparameters={"strategy": strategy},
                                                  custom_config=custom))


def test_ukd_compiles_with_its_teacher_steps_on_gpus(tmp_path):
    out = tmp_path / "ukd.json"
    argv = ["compile-kubeflow", "--out", str(out), "--image", IMAGE, "--set", "model.strategy=ukd"]
    assert cli.main(argv + [arg for setting in SETTINGS for arg in ("--set", setting)]) == 0
    spec = json.loads(out.read_text())
    tasks = _spec(spec)["root"]["dag"]["tasks"]
    assert tasks["BulkInferrer"]["inputs"]["artifacts"]["model"]["taskOutputArtifact"] == {
        "outputArtifactKey": "model", "producerTask": dag.UKD_TEACHER_TRAINER_ID}
    assert tasks["Trainer"]["inputs"]["artifacts"]["examples"]["taskOutputArtifact"] == {
        "outputArtifactKey": "output_examples", "producerTask": "BulkInferrer"}
    # The run parameters tune the student; both Trainers get the GPUs.
    assert "hyperparameters" in tasks["Trainer"]["inputs"]["artifacts"]
    assert "hyperparameters" not in tasks[dag.UKD_TEACHER_TRAINER_ID]["inputs"]["artifacts"]
    executors = _spec(spec)["deploymentSpec"]["executors"]
    for task in ("Trainer", dag.UKD_TEACHER_TRAINER_ID):
        assert executors[_executor_label(spec, task)]["container"]["resources"] == {
            "accelerator": {"type": "NVIDIA_TESLA_T4", "count": "2"}}


@pytest.mark.parametrize("settings, message", [
    (SETTINGS, "kubeflow.image is not set"),
    ([*SETTINGS, f"kubeflow.image={IMAGE}", "kubeflow.pipeline_root=/home/me/pfdx"],
     "kubeflow.pipeline_root: '/home/me/pfdx' is not a shared URI"),
    ([*SETTINGS, f"kubeflow.image={IMAGE}", "kubeflow.beam_runner=DataflowRunner",
      "kubeflow.beam_args.DataflowRunner=[--project=acme-ml]"],
     "kubeflow.beam_args.DataflowRunner: missing --region, --temp_location"),
    ([*SETTINGS, f"kubeflow.image={IMAGE}", "kubeflow.beam_runner=FlinkRunner",
      "kubeflow.beam_args.FlinkRunner=[--flink_master=flink:8081]"],
     "kubeflow.beam_args.FlinkRunner: missing --environment_type"),
    ([*SETTINGS, f"kubeflow.image={IMAGE}", "kubeflow.beam_runner=Dataflow"],
     r"unknown Beam runner\(s\) \['Dataflow'\]"),
    ([*SETTINGS, f"kubeflow.image={IMAGE}", "kubeflow.beam_args.DataFlowRunner=[--project=p]"],
     r"unknown Beam runner\(s\) \['DataFlowRunner'\]"),
], ids=["no-image", "local-root", "dataflow-flags", "flink-flags", "runner", "runner-typo"])
def test_errors_name_the_setting(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message):
        kubeflow_compile.compile_pipeline(load_config(None, settings), str(tmp_path / "p.json"))
