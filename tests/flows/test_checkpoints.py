from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flows.checkpoints import Checkpoint, CheckpointStore, check_resumable
from storage.errors import ModelError, ParameterError

PARAMETERS = {
    "dataset": "digits",
    "dataset_version": "abc",
    "learning_rate": 0.001,
    "batch_size": 64,
    "seed": 0,
    "augment": "crop",
    "epochs": 5,
}


def checkpoint(epoch: int = 2) -> Checkpoint:
    return Checkpoint(
        epoch=epoch,
        model={"weight": torch.full((2, 2), float(epoch))},
        optimizer={"state": {}, "param_groups": []},
        scaler=None,
        history=[{"epoch": e, "val_loss": 1.0 / e} for e in range(1, epoch + 1)],
        best_epoch=epoch,
        best_val_loss=1.0 / epoch,
        rng={"torch": torch.get_rng_state()},
        parameters=PARAMETERS,
    )


def test_a_checkpoint_round_trips(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "run")
    assert store.load() is None
    store.save(checkpoint(2), best_model={"weight": torch.ones(2, 2)})
    loaded = store.load()
    assert loaded is not None
    assert loaded.epoch == 2
    assert loaded.history == checkpoint(2).history
    assert torch.equal(store.load_best()["weight"], torch.ones(2, 2))


def test_a_save_cut_short_leaves_the_previous_checkpoint_whole(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "run")
    store.save(checkpoint(1), best_model={"weight": torch.ones(2, 2)})
    # What a kill during torch.save leaves: a partial temporary file beside the checkpoint.
    (store.folder / ".last.pt-partial").write_bytes(b"PK\x03\x04 cut short")
    store.save(checkpoint(2), best_model=None)  # no better epoch: best.pt stays the first one's
    loaded = store.load()
    assert loaded is not None
    assert loaded.epoch == 2
    assert torch.equal(store.load_best()["weight"], torch.ones(2, 2))
    store.remove()
    assert not store.folder.exists()


def test_resume_needs_a_checkpoint() -> None:
    with pytest.raises(ModelError, match="run r1 has no checkpoint"):
        check_resumable(None, run_id="r1", parameters=PARAMETERS)


@pytest.mark.parametrize(
    ("name", "value"), [("learning_rate", 0.01), ("dataset_version", "def"), ("augment", "flip"), ("seed", 1)]
)
def test_resume_refuses_parameters_that_differ(name: str, value: object) -> None:
    with pytest.raises(ParameterError, match=f"^{name} .* differs from .* which run r1 trained with"):
        check_resumable(checkpoint(), run_id="r1", parameters={**PARAMETERS, name: value})


def test_resume_may_add_epochs_but_not_drop_them() -> None:
    assert check_resumable(checkpoint(2), run_id="r1", parameters={**PARAMETERS, "epochs": 9}).epoch == 2
    with pytest.raises(ParameterError, match="epochs 1 is fewer than the 2 run r1 already trained"):
        check_resumable(checkpoint(2), run_id="r1", parameters={**PARAMETERS, "epochs": 1})
