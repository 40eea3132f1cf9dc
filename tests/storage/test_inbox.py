from pathlib import Path

from storage.inbox import add_to_inbox, inbox_items


def test_an_image_enters_the_inbox_once(tmp_path: Path) -> None:
    source = tmp_path / "seen.PNG"
    source.write_bytes(b"png bytes")
    digest = "ab" * 32
    for reason, added in (("low-confidence", True), ("drift", False)):
        assert (
            add_to_inbox(
                tmp_path / "inbox",
                "digits",
                image=source,
                sha256=digest,
                guess="7",
                confidence=0.4,
                model_version="3",
                reason=reason,  # type: ignore[arg-type]
            )
            == added
        )
    (item,) = inbox_items(tmp_path / "inbox", "digits")
    assert (item.guess, item.reason, item.file) == ("7", "low-confidence", f"{digest}.png")
    assert (tmp_path / "inbox" / "digits" / item.file).read_bytes() == b"png bytes"
    assert not list((tmp_path / "inbox" / "digits").glob(".*"))
