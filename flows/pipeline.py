"""The training pipeline as a Prefect flow: each step a task over a plain function (``flows/steps.py``).

prepare -> build model -> train -> evaluate -> export + verify -> log -> register -> gate -> deploy -> promote
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

from prefect import flow
from prefect.logging import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Cancelled

from flows import abandoned, live_runs, promote, steps, tracking, train
from flows.gpu_slot import SlotWaitInterruptedError, hold_gpu_slot
from flows.parameters import TrainingParameters, flat_parameters
from flows.run_record import RunSummary
from storage.settings import Settings, get_settings


@dataclass(frozen=True)
class PipelineResult:
    run_id: str
    model_name: str
    model_version: str
    dataset: str
    test_accuracy: float
    test_macro_f1: float
    device: str
    decision: promote.GateDecision
    served_url: str | None

    @property
    def promoted(self) -> bool:
        return self.decision.promote and self.served_url is not None

    @property
    def summary(self) -> RunSummary:
        return RunSummary(
            run_id=self.run_id,
            model=f"{self.model_name} v{self.model_version}",
            dataset=self.dataset,
            test_accuracy=self.test_accuracy,
            test_macro_f1=self.test_macro_f1,
            device=self.device,
            gate=self.decision.reason,
        )


# The run form, the API's validation and the call signature are TrainingParameters' fields, flat:
# `training_pipeline(epochs=2)` here, `{"epochs": 2}` from the UI or the API.
@flow(name="training-pipeline", log_prints=True, validate_parameters=True)
@flat_parameters(TrainingParameters)
def training_pipeline(parameters: TrainingParameters) -> PipelineResult:
    """Train, evaluate, export, register and (if better) deploy an image classifier."""
    settings = get_settings()
    # This training's locked record: if the process dies, the next training sees it and releases
    # what it held. Trainings that died before are settled first.
    with live_runs.claim(settings, flow_run_id=flow_run.id, flow_run_name=flow_run.name or "") as live:
        for dead in abandoned.recover_killed_trainings(settings):
            print(f"{dead.describe()} died without ending: its slot and runs are released and marked crashed")
        try:
            return _train(settings, parameters, live)
        except (KeyboardInterrupt, SlotWaitInterruptedError) as interrupted:
            # Ctrl-C is the user's stop, not a failure: the flow run ends Cancelled with one line
            # (a returned state is final; a raised one gets a traceback in the log). Callers get
            # Prefect's CancelledRun.
            reason = str(interrupted) or "interrupted (Ctrl-C)"
            return cast(PipelineResult, Cancelled(message=reason))


def _train(settings: Settings, parameters: TrainingParameters, live: live_runs.LiveTraining) -> PipelineResult:
    name = parameters.model_name
    train.resolve_device(parameters.device)  # fail before any work when CUDA was asked for and is missing
    data = steps.prepare_data(settings, parameters.dataset, parameters.dataset_version, parameters.seed)
    # The model is built and run once on the dataset's shape before the MLflow run exists: bad
    # model code, hyperparameters or weights stop the flow here, with nothing stored.
    model = steps.build_model(settings, data, parameters)
    # A resumed run is the same MLflow run, continued from its last checkpoint: its finished
    # history holds every epoch once. A bad resume fails here, leaving that run as it was.
    checkpoint = None
    if parameters.resume:
        run_id = parameters.resume
        checkpoint = steps.resume_mlflow_run(settings, run_id, data, parameters)
    else:
        run_id = steps.start_mlflow_run(settings, data, parameters.seed, name)
    live.update(mlflow_run_id=run_id)
    failed, interrupted = True, False
    try:
        # One slot of the `gpu` limit per training: two runs started together train one after
        # the other. Serving never takes a slot.
        with hold_gpu_slot(settings, live, say=get_run_logger().info):
            training = steps.train_model(settings, run_id, data, model, parameters, checkpoint)
            evaluation = steps.evaluate_model(data, training)
            training.model.cpu()  # export and serving work on CPU; the GPU is free for the next run
            train.release_gpu_memory()
        with tempfile.TemporaryDirectory(prefix="onebox-export-") as folder:
            check = steps.export_model(data, training, Path(folder))
            model_uri = steps.log_run(
                settings, run_id, parameters, data, training, evaluation, check, Path(folder) / "model.onnx", model
            )
        version = steps.register(settings, name, model_uri, run_id, data, evaluation)
        decision = steps.gate(settings, name, run_id, version, data, evaluation, parameters.min_improvement)
        served_url = None
        if decision.promote and parameters.deploy:
            served_url = steps.deploy_version(settings, name, version, decision.production_version or "")
            if served_url is None:  # production moved after the gate compared: it decided nothing
                reason = f"kept production: it moved while v{version} was being compared (run again to compare)"
                decision = replace(decision, promote=False, reason=reason)
        elif decision.promote:
            print(f"version {version} passed the gate; not deployed (deploy is off)")
        tracking.log_outcome(settings, run_id, metrics={"promoted": float(served_url is not None)}, tags={})
        steps.write_report(settings, name, run_id, evaluation, decision, served_url)
        failed = False
    except (KeyboardInterrupt, SlotWaitInterruptedError):
        interrupted = True
        raise
    finally:
        tracking.end_run(settings, run_id, failed=failed, killed=interrupted)
    return PipelineResult(
        run_id=run_id,
        model_name=name,
        model_version=version,
        dataset=f"{data.dataset.name}:{data.dataset.version}",
        test_accuracy=evaluation.accuracy,
        test_macro_f1=evaluation.macro_f1,
        device=training.device,
        decision=decision,
        served_url=served_url,
    )
