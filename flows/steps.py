"""The training pipeline's steps as Prefect tasks, each over a plain function of its stage.

The flow that orders them is ``flows/pipeline.py``.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from flows import (
    abandoned,
    checkpoints,
    evaluate,
    export,
    model_build,
    model_record,
    prepare,
    promote,
    reference,
    report,
    tracking,
    train,
)
from flows.parameters import TrainingParameters, augment_names
from storage.datasets import open_images, resolve_dataset
from storage.registry import MODEL_NAME_TAG, PRODUCTION, version_by_alias
from storage.settings import Settings

# Tasks pass arrays and models in memory (NO_CACHE): hashing them for a cache key would cost
# more than it saves, and a rerun should train again anyway.
#
# Steps that talk to MLflow retry: the MLflow client already retries refused connections with
# backoff, and a task retry covers what outlasts that (a server restarting). Registering and
# deploying do not retry: a second attempt could register twice or race the first deploy.
MLFLOW_RETRIES, MLFLOW_RETRY_DELAYS_S = 2, [5.0, 20.0]


@task(name="prepare", cache_policy=NO_CACHE)
def prepare_data(settings: Settings, dataset: str, dataset_version: str | None, seed: int) -> prepare.PreparedData:
    version = resolve_dataset(dataset, dataset_version, settings)
    print(
        f"dataset {version.name}:{version.version}: {version.num_images} images, "
        f"{len(version.classes)} classes, shape {version.image_shape}"
    )
    return prepare.split_dataset(open_images(version), seed=seed)


@task(name="build-model", cache_policy=NO_CACHE)
def build_model(
    settings: Settings, data: prepare.PreparedData, parameters: TrainingParameters
) -> model_build.BuiltModel:
    """The run's model, built and checked on one batch of the dataset's shape: before anything is stored."""
    built = model_build.build_run_model(
        parameters, settings, num_classes=len(data.classes), input_shape=data.dataset.image_shape
    )
    size = sum(p.numel() for p in built.module.parameters())
    print(f"model {parameters.model_code}: {type(built.module).__name__}, {size:,} parameters, {built.hyperparameters}")
    if built.init_weights is not None:
        fresh = ", ".join(built.reinitialised) or "none"
        print(f"initial weights {built.init_weights}; re-initialised for {len(data.classes)} classes: {fresh}")
    return built


@task(name="start-mlflow-run", cache_policy=NO_CACHE, retries=MLFLOW_RETRIES, retry_delay_seconds=MLFLOW_RETRY_DELAYS_S)
def start_mlflow_run(settings: Settings, data: prepare.PreparedData, seed: int, model_name: str) -> str:
    for run_id in abandoned.fail_abandoned_runs(settings):
        print(f"MLflow run {run_id} was left RUNNING by a process that died: marked FAILED (resumable)")
    tags = {"onebox.flow": "training-pipeline", MODEL_NAME_TAG: model_name, **abandoned.process_tags()}
    if flow_run.id:
        tags["onebox.prefect_flow_run_id"] = flow_run.id
    run_id = tracking.start_run(settings, run_name=f"{model_name}-seed{seed}", tags=tags)
    print(f"MLflow run {run_id}")
    return run_id


def checkpoint_parameters(parameters: TrainingParameters, data: prepare.PreparedData) -> dict[str, object]:
    """What a checkpoint records of its run, to check a resume against: the fields and the resolved version."""
    return {**parameters.model_dump(exclude={"resume"}), "dataset_version": data.dataset.version}


@task(
    name="resume-mlflow-run", cache_policy=NO_CACHE, retries=MLFLOW_RETRIES, retry_delay_seconds=MLFLOW_RETRY_DELAYS_S
)
def resume_mlflow_run(
    settings: Settings, run_id: str, data: prepare.PreparedData, parameters: TrainingParameters
) -> checkpoints.Checkpoint:
    """The run's last checkpoint, once the parameters are checked against it and the run is RUNNING again.

    Raises:
        ModelError: no such run, it finished, or it has no checkpoint.
        ParameterError: the parameters differ from the run's where they must match.
    """
    store = checkpoints.CheckpointStore(checkpoints.checkpoint_dir(settings, run_id))
    tracking.check_unfinished(settings, run_id)
    checkpoint = checkpoints.check_resumable(
        store.load(), run_id=run_id, parameters=checkpoint_parameters(parameters, data)
    )
    tags = {"onebox.resumed_after_epoch": str(checkpoint.epoch), **abandoned.process_tags()}
    if flow_run.id:
        tags["onebox.prefect_flow_run_id"] = flow_run.id
    tracking.reopen_run(settings, run_id, tags=tags)
    print(f"MLflow run {run_id}: resuming after epoch {checkpoint.epoch}")
    return checkpoint


@task(name="train", cache_policy=NO_CACHE)
def train_model(
    settings: Settings,
    run_id: str,
    data: prepare.PreparedData,
    model: model_build.BuiltModel,
    parameters: TrainingParameters,
    resume: checkpoints.Checkpoint | None = None,
) -> train.TrainingResult:
    def print_epoch(stats: train.EpochStats) -> None:
        print(
            f"epoch {stats.epoch}/{parameters.epochs}: loss {stats.train_loss:.4f} acc {stats.train_accuracy:.4f} "
            f"| val loss {stats.val_loss:.4f} val acc {stats.val_accuracy:.4f}"
        )

    result = train.train_model(
        data,
        model.module,
        epochs=parameters.epochs,
        learning_rate=parameters.learning_rate,
        batch_size=parameters.batch_size,
        seed=parameters.seed,
        device=parameters.device,
        augment=augment_names(parameters.augment),
        patience=parameters.patience,
        workers=parameters.workers,
        checkpoints=checkpoints.CheckpointStore(checkpoints.checkpoint_dir(settings, run_id)),
        resume=resume,
        parameters=checkpoint_parameters(parameters, data),
        on_epoch=print_epoch,
    )
    stopped = f", stopped early after epoch {result.stopped_epoch}" if result.stopped_epoch < parameters.epochs else ""
    print(
        f"trained on {result.device} in {result.seconds:.1f} s ({result.train_images_per_second:.0f} images/s)"
        f"{stopped}; best epoch {result.best_epoch} (lowest validation loss) is the model evaluated"
    )
    return result


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_model(data: prepare.PreparedData, training: train.TrainingResult) -> evaluate.Evaluation:
    probabilities = train.predict_split(training.model, data.test)
    result = evaluate.evaluate_probabilities(probabilities, data.test.labels, data.classes)
    print(f"test accuracy {result.accuracy:.4f}, macro-F1 {result.macro_f1:.4f}")
    return result


@task(name="export-onnx", cache_policy=NO_CACHE)
def export_model(data: prepare.PreparedData, training: train.TrainingResult, folder: Path) -> export.ExportCheck:
    onnx_path = export.export_onnx(training.model, folder / "model.onnx", input_shape=data.dataset.image_shape)
    check = export.check_export(training.model, onnx_path, data.test.sample(prepare.EXPORT_CHECK_IMAGES))
    print(
        f"ONNX parity: max |logit diff| {check.max_abs_logit_diff:.2e}, top-1 agreement "
        f"{check.top1_agreement:.4f}; batch-1 latency torch {check.torch_latency_ms[1]:.3f} ms, "
        f"ONNX Runtime {check.onnx_latency_ms[1]:.3f} ms"
    )
    print(reference.describe(reference.write_reference(onnx_path, data), check))  # logged, bundled with the graph
    return check


@task(name="log-to-mlflow", cache_policy=NO_CACHE, retries=MLFLOW_RETRIES, retry_delay_seconds=MLFLOW_RETRY_DELAYS_S)
def log_run(
    settings: Settings,
    run_id: str,
    parameters: TrainingParameters,
    data: prepare.PreparedData,
    training: train.TrainingResult,
    evaluation: evaluate.Evaluation,
    check: export.ExportCheck,
    onnx_path: Path,
    model: model_build.BuiltModel,
) -> str:
    model_record.log_model_code(settings, run_id, model, training.model)
    uri = tracking.log_training(
        settings,
        run_id,
        params={**parameters.hyperparameters(), **model_record.params(model)},
        data=data,
        training=training,
        evaluation=evaluation,
        export=check,
        onnx_path=onnx_path,
    )
    # The model is in MLflow now: the run's checkpoints have served their purpose.
    checkpoints.CheckpointStore(checkpoints.checkpoint_dir(settings, run_id)).remove()
    return uri


@task(name="register", cache_policy=NO_CACHE)
def register(
    settings: Settings,
    name: str,
    model_uri: str,
    run_id: str,
    data: prepare.PreparedData,
    evaluation: evaluate.Evaluation,
) -> str:
    version = tracking.register_model(
        settings, name, model_uri=model_uri, run_id=run_id, data=data, evaluation=evaluation
    )
    tracking.log_outcome(settings, run_id, metrics={}, tags={"onebox.model_version": version})
    print(f"registered {name} version {version}")
    return version


@task(name="promotion-gate", cache_policy=NO_CACHE, retries=MLFLOW_RETRIES, retry_delay_seconds=MLFLOW_RETRY_DELAYS_S)
def gate(
    settings: Settings,
    name: str,
    run_id: str,
    version: str,
    data: prepare.PreparedData,
    evaluation: evaluate.Evaluation,
    min_improvement: float,
) -> promote.GateDecision:
    dataset = data.dataset
    refusal = promote.binding_refusal(
        settings,
        name,
        version,
        classes=dataset.classes,
        image_shape=dataset.image_shape,
        dataset=f"{dataset.name}:{dataset.version}",
    )
    if refusal:  # not scored against production: it is another task; the decision still names it
        current = version_by_alias(settings, name, PRODUCTION)
        production_version, production, note = (current.version if current else ""), None, ""
    else:
        production_version, production, note = promote.evaluate_production(settings, name, data)
    if production is not None:
        tracking.log_outcome(
            settings,
            run_id,
            metrics=production.flat_metrics(prefix="production_test_"),
            tags={"onebox.production_version": production_version},
        )
    decision = promote.decide_promotion(
        challenger_version=version,
        challenger=evaluation,
        production_version=production_version,
        production=production,
        note=note,
        min_improvement=min_improvement,
        refusal=refusal,
    )
    tracking.log_outcome(
        settings,
        run_id,
        metrics={},
        tags={
            "onebox.gate": "passed" if decision.promote else "refused" if decision.refused else "kept-production",
            "onebox.gate_reason": decision.reason,
        },
    )
    print(decision.reason)
    return decision


@task(name="report", cache_policy=NO_CACHE, retries=MLFLOW_RETRIES, retry_delay_seconds=MLFLOW_RETRY_DELAYS_S)
def write_report(
    settings: Settings,
    name: str,
    run_id: str,
    evaluation: evaluate.Evaluation,
    decision: promote.GateDecision,
    served_url: str | None,
) -> str:
    # The model's own production, also when it cannot be scored on this split (the report says why).
    refusal = decision.reason if decision.refused else ""
    html = report.build_report(settings, run_id, baseline_version=decision.production_version, refusal=refusal)
    uri = report.log_report(settings, run_id, html)
    create_markdown_artifact(
        key="training-summary",
        markdown=report.summary_markdown(settings, name, run_id, decision, served_url, uri),
        description=f"{name} v{decision.challenger_version}: {decision.reason}",
    )
    create_table_artifact(
        key="training-metrics",
        table=report.metrics_table(evaluation, decision.production_evaluation),
        description=f"{name} v{decision.challenger_version} vs its production, same test split",
    )
    print(f"evaluation report: {uri}")
    return uri


@task(name="deploy-and-promote", cache_policy=NO_CACHE)
def deploy_version(settings: Settings, name: str, version: str, compared_with: str) -> str | None:
    """The new production's URL; None when production moved since the gate compared (said why)."""
    try:
        url = promote.deploy_and_promote(settings, name, version, compared_with=compared_with)
    except promote.ProductionMovedError as error:
        print(f"not deployed: {error}")
        return None
    print(f"{name} version {version} serves at {url} and is now production")
    return url
