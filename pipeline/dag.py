"""The one pfdx TFX pipeline definition, shared by every runner (local, Kubeflow).

The example space follows the strategy (`PipelineConfig.space`): clicked rows, or
every impression with its click label (TAML, UKD). A strategy with a teacher stage
(models/registry.py `teacher_stage`: UKD) is a DAG variant: a first Trainer fits the
stage (UKD's click-adaptive teacher), TFX's BulkInferrer writes its served CVR into
every example as PSEUDO_LABEL_COLUMN, and the main Trainer fits the student on those
examples.
"""
from __future__ import annotations

from tfx import v1 as tfx

from pfdx.components import splits
from pfdx.components.click_log_example_gen import ClickLogExampleGen
from pfdx.components.evaluation_report import EvaluationReport, EvaluationReportArtifact
from pfdx.components.privileged_feature_selection import PrivilegedFeatureSelection
from pfdx.components.privileged_transform import PrivilegedTransform
from pfdx.components.trainer import trainer_custom_config
from pfdx.components.validation_gate import VALIDATED_KEY, ValidationGate
from pfdx.config import PipelineConfig
from pfdx.features import transform
from pfdx.models import registry
from pfdx.pipeline.evaluation import eval_config
from pfdx.serving.export import OUTPUT_KEY

TRAINER_MODULE = "pfdx.components.trainer"
# The raw column BulkInferrer adds to the examples: the teacher stage's CVR.
PSEUDO_LABEL_COLUMN = "pfdx_teacher_cvr"
# The teacher stage's Trainer (UKD's is the only stage).
UKD_TEACHER_TRAINER_ID = "UkdTeacherTrainer"


def create_components(config: PipelineConfig, input_base: str, serving_dir: str,
                      num_spans=None) -> list:
    """Components in DAG order; runners add only runner-specific settings (`num_spans`:
    a run parameter for data.spans.num_spans, on Kubeflow)."""
    example_gen = ClickLogExampleGen(input_base=input_base,
                                     data_config=config.to_dict()["data"],
                                     pattern=config.data.file_pattern, space=config.space,
                                     num_spans=num_spans)
    examples = example_gen.outputs["examples"]
    statistics_gen = tfx.components.StatisticsGen(examples=examples)
    if config.data.schema_path is None:
        schema_gen = tfx.components.SchemaGen(statistics=statistics_gen.outputs["statistics"],
                                              infer_feature_shape=True)
    else:
        schema_gen = tfx.components.ImportSchemaGen(schema_file=config.data.schema_path)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    # The schema of the last run the gate passed (none on a first run): drift baseline.
    last_validated = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
        schema=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Schema,
                               producer_component_id=ValidationGate.__name__,
                               output_key=VALIDATED_KEY),
    ).with_id("latest_validated_schema_resolver")
    gate = ValidationGate(statistics=statistics_gen.outputs["statistics"],
                          schema=schema_gen.outputs["schema"],
                          anomalies=example_validator.outputs["anomalies"],
                          baseline=last_validated.outputs["schema"],
                          allow_anomalies=config.runner.allow_anomalies)
    # The last blessed model: the Evaluator's baseline and, with warm start
    # (`PipelineConfig.warm_starts`), what selection and the Trainer continue.
    baseline = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
    ).with_id("latest_blessed_model_resolver")
    base_model = baseline.outputs["model"] if config.warm_starts else None
    selection = PrivilegedFeatureSelection(examples=examples, config=config,
                                           base_model=base_model)
    transform_ = PrivilegedTransform(examples=examples, schema=schema_gen.outputs["schema"],
                                     statistics=statistics_gen.outputs["statistics"],
                                     selection=selection.outputs["selection"],
                                     regular_config=transform.regular_config(config))
    # Nothing that reads the examples runs before the gate passes. An ordering edge,
    # not a data edge: the gate re-runs every run (its baseline is the previous
    # run's output), and a data edge would make every component after it re-run too.
    for consumer in (selection, transform_):
        consumer.add_upstream_node(gate)

    def make_trainer(trainer_config: PipelineConfig, train_examples, base=None, **kwargs):
        return tfx.components.Trainer(
            run_fn=f"{TRAINER_MODULE}.run_fn",
            examples=train_examples,
            base_model=base,
            train_args=tfx.proto.TrainArgs(splits=[splits.TRAIN]),
            # Early stopping, tuning, the baseline gate and calibration read the
            # validation split; the eval split is held out for the final metrics.
            eval_args=tfx.proto.EvalArgs(splits=[splits.VALIDATION, splits.EVAL]),
            transform_graph=transform_.outputs["transform_graph"],
            schema=schema_gen.outputs["schema"],
            custom_config=trainer_custom_config(trainer_config, **kwargs))

    teacher_steps, teacher_run = [], {}
    stage = registry.STRATEGIES[config.model.strategy].teacher_stage
    if stage is not None:
        teacher = make_trainer(config.with_model({"strategy": stage}), examples).with_id(
            UKD_TEACHER_TRAINER_ID)
        pseudo_labels = tfx.components.BulkInferrer(
            examples=examples, model=teacher.outputs["model"],
            data_spec=tfx.proto.DataSpec(),  # every split: the student reads train and eval
            model_spec=tfx.proto.ModelSpec(model_signature_name=["serving_default"]),
            output_example_spec=tfx.proto.OutputExampleSpec(output_columns_spec=[
                tfx.proto.OutputColumnsSpec(predict_output=tfx.proto.PredictOutput(
                    output_columns=[tfx.proto.PredictOutputCol(
                        output_key=OUTPUT_KEY, output_column=PSEUDO_LABEL_COLUMN)]))]))
        teacher_steps = [teacher, pseudo_labels]
        teacher_run = {"teacher_run": teacher.outputs["model_run"]}
        trainer = make_trainer(config, pseudo_labels.outputs["output_examples"], base_model,
                               pseudo_label_column=PSEUDO_LABEL_COLUMN)
    else:
        trainer = make_trainer(config, examples, base_model)
    evaluator = tfx.components.Evaluator(
        examples=examples, model=trainer.outputs["model"], example_splits=[splits.EVAL],
        baseline_model=baseline.outputs["model"], eval_config=eval_config(config))
    # The previous run's report (none on a first run): the history it carries on.
    last_report = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
        report=tfx.dsl.Channel(type=EvaluationReportArtifact,
                               producer_component_id=EvaluationReport.__name__,
                               output_key="report"),
    ).with_id("latest_report_resolver")
    report = EvaluationReport(evaluation=evaluator.outputs["evaluation"],
                              model_run=trainer.outputs["model_run"], examples=examples,
                              blessing=evaluator.outputs["blessing"],
                              previous=last_report.outputs["report"], **teacher_run)
    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=serving_dir)))
    return [example_gen, statistics_gen, schema_gen, example_validator, last_validated, gate,
            baseline, selection, transform_, *teacher_steps, trainer, evaluator, last_report,
            report, pusher]


def create_pipeline(config: PipelineConfig, input_base: str, pipeline_root: str,
                    serving_dir: str, metadata_connection_config=None,
                    beam_pipeline_args: list[str] | None = None) -> tfx.dsl.Pipeline:
    return tfx.dsl.Pipeline(
        pipeline_name=config.runner.pipeline_name,
        pipeline_root=pipeline_root,
        components=create_components(config, input_base, serving_dir),
        enable_cache=config.runner.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=beam_pipeline_args or [],
    )
