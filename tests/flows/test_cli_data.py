"""`onebox data import` as a user runs it: progress, bad files listed, --skip-bad, resolutions."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

from storage.settings import Settings
from tests.flows.test_cli import ONEBOX, onebox
from tests.storage.test_dataset_import import add_bad_files, make_photos


def test_import_shows_progress_in_logs_and_records_the_resolution(settings: Settings, tmp_path: Path) -> None:
    source = make_photos(tmp_path / "src")
    imported = onebox(settings, "data", "import", str(source), "--name", "photos", "--image-size", "40x32",
                      "--resize", "crop")  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert "hashing and reading headers: 12/12 images" in imported.stdout
    assert "converting and storing: 12/12 images" in imported.stdout
    assert "stored as 3x40x32" in imported.stdout
    assert "crop" in imported.stdout
    [listed] = json.loads(onebox(settings, "data", "list", "--json").stdout)
    assert (listed["image_shape"], listed["resize"], listed["skipped"]) == ([3, 40, 32], "crop", 0)


def test_bad_files_are_listed_and_refused_then_skipped_on_request(settings: Settings, tmp_path: Path) -> None:
    source = make_photos(tmp_path / "src")
    add_bad_files(source)
    refused = onebox(settings, "data", "import", str(source), "--name", "photos", columns=400)
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    for name in ("truncated.jpg", "bomb.png: too many pixels", "text.jpg"):
        assert name in refused.stderr
    assert "nothing was imported" in refused.stderr
    assert json.loads(onebox(settings, "data", "list", "--json").stdout) == []

    skipped = onebox(settings, "data", "import", str(source), "--name", "photos", "--skip-bad", columns=400)
    assert skipped.returncode == 0, skipped.stderr
    assert "skipped 3 unreadable file(s)" in skipped.stderr
    assert "bomb.png" in skipped.stderr
    [listed] = json.loads(onebox(settings, "data", "list", "--json").stdout)
    assert (listed["num_images"], listed["skipped"]) == (12, 3)


def test_impossible_sizes_and_policies_are_one_line_errors(settings: Settings, tmp_path: Path) -> None:
    source = str(make_photos(tmp_path / "src"))
    for args, expected in [
        (["--image-size", "0"], "image size '0' is out of range"),
        (["--image-size", "big"], "is not N or HxW"),
        (["--resize", "zoom"], "--resize 'zoom' is unknown; use one of stretch, crop, pad"),
    ]:
        result = onebox(settings, "data", "import", source, "--name", "photos", *args, columns=400)
        assert result.returncode == 1, args
        assert expected in result.stderr
        assert "Traceback" not in result.stderr


def test_a_terminal_gets_a_progress_bar(settings: Settings, tmp_path: Path) -> None:
    source = make_photos(tmp_path / "src")
    controller, terminal = os.openpty()
    output = bytearray()

    def drain() -> None:  # read while it runs, so a full pseudo-terminal buffer never blocks it
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's last writer is gone
                return
            if not chunk:
                return
            output.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    env = {**os.environ, "ONEBOX_HOME": str(settings.home), "COLUMNS": "100", "TERM": "xterm"}
    try:
        done = subprocess.run([ONEBOX, "data", "import", str(source), "--name", "photos"], stdin=terminal,
                              stdout=terminal, stderr=terminal, env=env, timeout=120, check=False)  # fmt: skip
    finally:
        os.close(terminal)
    reader.join(timeout=30)
    os.close(controller)
    text = output.decode(errors="replace")
    assert done.returncode == 0, text
    assert "\u2501" in text  # the bar itself (rich draws it with heavy horizontal lines)
    assert "12/12" in text
    assert "hashing and reading headers: 12/12 images" not in text  # the log lines are for non-terminals
