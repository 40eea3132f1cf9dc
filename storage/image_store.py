"""A dataset version's images on disk, written once at import and read one image at a time.

``images.u8`` is raw uint8 (N, C, H, W), C-ordered, with no header, so image ``i`` is the bytes
at ``i * C*H*W``: a read is one ``os.preadv`` into a fresh array. Nothing is memory-mapped, so a
dataset larger than memory costs page cache (which the kernel may drop), not resident memory.
Beside it: ``labels.npy`` (int64), ``files.txt`` (each image's original file under ``files/``, in
order) and ``store.json`` (count, shape, preprocessing). Versions imported before this format
hold ``arrays.npz`` instead; they are small and are read into memory.

No numpy at import time: storage.datasets imports this, and listing datasets must answer at once.
"""

from __future__ import annotations

import json
import operator
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from storage.errors import DatasetError

if TYPE_CHECKING:
    import numpy as np

    from storage.datasets import DatasetVersion
    from storage.images import Preprocessing

IMAGES_FILE = "images.u8"
LABELS_FILE = "labels.npy"
FILE_LIST = "files.txt"
STORE_HEADER = "store.json"
SKIPPED_FILE = "skipped.txt"
LEGACY_ARRAYS = "arrays.npz"
FORMAT = "onebox-images-1"


class ImageStoreWriter:
    """Appends converted images to a new store in ``folder`` (a staging folder, renamed when done)."""

    def __init__(self, folder: Path, preprocessing: Preprocessing) -> None:
        self.folder = folder
        self.preprocessing = preprocessing
        self._images: IO[bytes] = (folder / IMAGES_FILE).open("wb")
        self._labels: list[int] = []
        self._files: list[str] = []

    def add(self, image: np.ndarray, *, label: int, relative: str) -> None:
        """One image, uint8 of the preprocessing's shape; ``relative`` is its path under ``files/``."""
        if image.shape != self.preprocessing.shape or image.dtype.name != "uint8":
            raise DatasetError(
                f"{relative}: converted to {image.dtype} {image.shape}, not uint8 {self.preprocessing.shape}"
            )
        self._images.write(image.tobytes())
        self._labels.append(label)
        self._files.append(relative)

    def __len__(self) -> int:
        return len(self._labels)

    def finish(self) -> None:
        import numpy as np

        self._images.close()
        np.save(self.folder / LABELS_FILE, np.asarray(self._labels, dtype=np.int64))
        (self.folder / FILE_LIST).write_text("".join(f"{path}\n" for path in self._files))
        header = {"format": FORMAT, "count": len(self._labels), "preprocessing": self.preprocessing.to_dict()}
        (self.folder / STORE_HEADER).write_text(json.dumps(header, indent=2) + "\n")

    def abort(self) -> None:
        self._images.close()


class DatasetImages:
    """A dataset version's images, read one by one (or a few at a time) as training needs them.

    ``labels`` (int64, one per image, indexes into ``version.classes``) is loaded on first use;
    the images never are: :meth:`read` returns one uint8 (C, H, W) array of ``image_shape``.
    With a ``preprocessing`` other than the version's, each read decodes the original file again
    at that resolution and policy (slower). Picklable and cheap to pickle (the state is the
    version and the preprocessing): each torch DataLoader worker opens the files for itself.
    """

    def __init__(self, version: DatasetVersion, preprocessing: Preprocessing | None = None) -> None:
        self.version = version
        self.preprocessing = preprocessing or version.preprocessing
        self._from_files = self.preprocessing != version.preprocessing
        self._reset()

    def _reset(self) -> None:
        self._labels: np.ndarray | None = None
        self._fd: int | None = None
        self._legacy: np.ndarray | None = None
        self._files: list[str] | None = None
        self._legacy_format: bool | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"version": self.version, "preprocessing": self.preprocessing, "_from_files": self._from_files}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of what :meth:`read` returns."""
        return self.preprocessing.shape

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            import numpy as np

            path = self.version.path
            if (path / LABELS_FILE).is_file():
                self._labels = np.load(path / LABELS_FILE)
            elif (path / LEGACY_ARRAYS).is_file():
                with np.load(path / LEGACY_ARRAYS) as arrays:
                    self._labels = arrays["labels"]
            else:
                raise DatasetError(f"dataset version folder {path} has no images; import the dataset again")
        return self._labels

    def __len__(self) -> int:
        return len(self.labels)

    def _index(self, index: int) -> int:
        position = operator.index(index)
        count = len(self)
        if position < 0:
            position += count
        if not 0 <= position < count:
            raise IndexError(f"image {index} is out of range: the dataset has {count} images")
        return position

    def read(self, index: int) -> np.ndarray:
        """Image ``index``: uint8 (C, H, W), a new writable array."""
        position = self._index(index)
        if self._from_files:
            return self._decode(position)
        if self._is_legacy():
            legacy: np.ndarray = self._legacy_images()[position].copy()
            return legacy
        import numpy as np

        image = np.empty(self.image_shape, dtype=np.uint8)
        self._pread(image, position)
        return image

    def read_many(self, indexes: np.ndarray) -> np.ndarray:
        """Images ``indexes``: uint8 (len(indexes), C, H, W)."""
        import numpy as np

        positions = [self._index(int(i)) for i in np.asarray(indexes).reshape(-1)]
        batch = np.empty((len(positions), *self.image_shape), dtype=np.uint8)
        if positions and not self._from_files and not self._is_legacy():
            first = positions[0]
            if positions == list(range(first, first + len(positions))):  # one read for a run of images
                self._pread(batch, first)
                return batch
        for slot, position in enumerate(positions):
            batch[slot] = self.read(position)
        return batch

    def _pread(self, into: np.ndarray, position: int) -> None:
        if self._fd is None:
            self._fd = os.open(self.version.path / IMAGES_FILE, os.O_RDONLY)
        image_bytes = int(self.preprocessing.channels * self.preprocessing.height * self.preprocessing.width)
        got = os.preadv(self._fd, [into.data.cast("B")], position * image_bytes)
        if got != into.nbytes:
            raise DatasetError(
                f"{self.version.path / IMAGES_FILE} ends early (image {position}); import the dataset again"
            )

    def _is_legacy(self) -> bool:
        """Whether the version predates the image store (an ``arrays.npz``), asked once per process."""
        if self._legacy_format is None:
            self._legacy_format = not (self.version.path / IMAGES_FILE).is_file()
        return self._legacy_format

    def _legacy_images(self) -> np.ndarray:
        if self._legacy is None:
            import numpy as np

            with np.load(self.version.path / LEGACY_ARRAYS) as arrays:
                self._legacy = arrays["images"]
        return self._legacy

    def _decode(self, position: int) -> np.ndarray:
        if self._files is None:
            listing = self.version.path / FILE_LIST
            if listing.is_file():
                self._files = listing.read_text().splitlines()
            else:  # an arrays.npz version: its images were imported in this order (class, then path)
                files = self.version.path / "files"
                self._files = [
                    str(p.relative_to(files))
                    for class_name in self.version.classes
                    for p in sorted((files / class_name).rglob("*"))
                    if p.is_file()
                ]
        path = self.version.path / "files" / self._files[position]
        return self.preprocessing.decode(path.read_bytes(), source=str(path))

    def close(self) -> None:
        """Close the image file (reads open it again when needed)."""
        if self._fd is not None:
            os.close(self._fd)
        self._reset()

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)
