"""The training memory benchmark at a tiny size: it trains in a child process, measures it, and judges the target."""

from __future__ import annotations

from benchmarks.training import RSS_TARGET_BYTES, measure_memory, target_rows


def test_a_tiny_memory_run_measures_its_child_and_is_only_a_reference() -> None:
    memory = measure_memory(images=40, side=16, batch_size=8)
    assert memory["exit_code"] == 0
    assert memory["stored_image_shape"] == [3, 16, 16]
    assert memory["decoded_float32_bytes"] == 40 * 3 * 16 * 16 * 4
    # torch alone is hundreds of MB; the summed RSS counts shared pages at least once.
    assert 100 * 2**20 < memory["peak_rss_bytes"] <= memory["peak_summed_rss_bytes"]
    assert memory["peak_largest_process_rss_bytes"] <= memory["peak_summed_rss_bytes"]
    [(_, measured, met)] = target_rows({"memory": memory})
    assert met is None  # a reduced size proves nothing about the target
    assert "40 images 3x16x16" in measured


def test_a_full_size_epoch_that_did_not_finish_is_not_met() -> None:
    below = {
        "images": 30_000,
        "stored_image_shape": [3, 224, 224],
        "decoded_float32_bytes": 30_000 * 3 * 224 * 224 * 4,
        "peak_rss_bytes": RSS_TARGET_BYTES // 2,
        "full_size": True,
    }
    [(_, _, finished)] = target_rows({"memory": {**below, "exit_code": 0}})
    [(_, _, killed)] = target_rows({"memory": {**below, "exit_code": -9}})
    [(_, _, over)] = target_rows({"memory": {**below, "exit_code": 0, "peak_rss_bytes": RSS_TARGET_BYTES}})
    assert (finished, killed, over) == (True, False, False)
