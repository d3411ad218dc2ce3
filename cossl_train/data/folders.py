"""Image folders: labelled class trees, unlabelled folders, class lists, and Tiny-ImageNet-200
in its released layout.

Unreadable files (corrupt or truncated) give ``None`` samples, which the loader drops and counts.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from PIL import Image
from torch.utils.data import Dataset

from ..errors import DataError

__all__ = ["IMG_EXTENSIONS", "ImageFolderDataset", "TinyImageNetDataset", "load_image", "read_class_list"]

log = logging.getLogger(__name__)

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# Errors PIL raises on files it cannot decode (UnidentifiedImageError and "image file is
# truncated" are OSErrors; some plugins raise the others on malformed headers).
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    IndexError,
    struct.error,
    Image.DecompressionBombError,
)


def read_class_list(spec: str) -> list[str]:
    """Class folder names from a file (one per line; blank lines and ``#`` comments ignored).

    ``"imagenet100"`` is the CMC ImageNet-100 list (Tian et al. 2019) shipped with the package.
    """
    if spec == "imagenet100":
        text = resources.files("cossl_train").joinpath("resources/imagenet100.txt").read_text()
        source = "imagenet100"
    else:
        path = Path(spec).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"class list file not found: {path}")
        text = path.read_text()
        source = str(path)
    names = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    return checked_names([n for n in names if n], f"class list {source}")


def checked_names(names: list[str], what: str) -> list[str]:
    """``names`` unchanged, or a DataError naming ``what`` when it is empty or repeats a name."""
    if not names:
        raise DataError(f"{what} is empty")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"{what} repeats {len(dup)} name(s), e.g. {dup[0]}")
    return names


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS) and not name.startswith(".")


def images_under(folder: str, recursive: bool) -> list[str]:
    """Sorted image paths under ``folder`` (the order fixes labels and indices across runs)."""
    if not recursive:
        with os.scandir(folder) as it:
            return sorted(e.path for e in it if e.is_file() and is_image_name(e.name))
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        out.extend(os.path.join(dirpath, f) for f in filenames if is_image_name(f))
    return sorted(out)


def _subdirs(folder: str) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if e.is_dir() and not e.name.startswith("."))


def load_image(path: str, reported: set[str]) -> Image.Image | None:
    """The RGB image at ``path``, or ``None`` when it cannot be decoded (warned once per path:
    ``reported`` holds the paths already warned about in this process)."""
    try:
        with Image.open(path) as im:
            # convert() forces the full decode here, so truncation surfaces inside the try
            return im.convert("RGB")
    except _DECODE_ERRORS as e:
        if path not in reported:
            reported.add(path)
            log.warning("skipping unreadable image %s (%s: %s)", path, type(e).__name__, e)
        return None


class ImageFiles(Dataset):
    """Images read from ``self.samples``, a list of (path, label): samples ``(PIL RGB image,
    label)``, or ``None`` for a file that cannot be decoded (a warning once per file and process)."""

    samples: list[tuple[str, int]]
    #: files already reported as unreadable by this process
    _reported: set[str]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Image.Image, int] | None:
        path, label = self.samples[i]
        img = load_image(path, self._reported)
        return None if img is None else (img, label)


class ImageFolderDataset(ImageFiles):
    """A folder of images, labelled by class subfolders or unlabelled.

    Layouts:
      * labelled: ``root/<class>/**/<image>``; labels are the indices of the sorted class names;
      * unlabelled: images directly in ``root`` (no subfolders), every label ``-1``.
    ``labelled=None`` picks the layout from the folder; ``labelled=False`` treats every image
    under ``root`` (recursively) as unlabelled, whatever the subfolders.
    ``classes`` restricts a labelled tree to those folder names (all must exist); the labels then
    index the sorted selection, so an ImageNet-100 subset gets the labels an ImageFolder over a
    copied-out ImageNet-100 tree would give. ``class_to_idx`` instead imposes a given mapping
    (used for a validation folder, so it shares the training folder's labels; its classes may be
    missing from the folder).

    Samples are ``(PIL RGB image, label)``, or ``None`` when the file cannot be decoded (a warning
    is logged once per file and process).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        classes: Sequence[str] | None = None,
        labelled: bool | None = None,
        class_to_idx: dict[str, int] | None = None,
    ) -> None:
        root = os.path.expanduser(os.fspath(root))
        if not os.path.isdir(root):
            raise FileNotFoundError(f"image folder not found: {root}")
        self.root = root
        subdirs = _subdirs(root)
        if labelled is None:
            labelled = bool(subdirs) or classes is not None or class_to_idx is not None
        self.labelled = labelled
        if not labelled:
            if classes is not None or class_to_idx is not None:
                raise DataError(f"a class list needs class subfolders, but {root} is used unlabelled")
            self.classes: list[str] = []
            self.class_to_idx: dict[str, int] = {}
            self.samples = [(p, -1) for p in images_under(root, recursive=True)]
        else:
            if class_to_idx is not None:
                mapping = dict(class_to_idx)
                present = [c for c in mapping if c in set(subdirs)]
            else:
                wanted = sorted(classes) if classes is not None else subdirs
                missing = sorted(set(wanted) - set(subdirs))
                if missing:
                    raise FileNotFoundError(
                        f"{len(missing)} of {len(wanted)} listed classes have no folder under {root} "
                        f"(e.g. {missing[0]})"
                    )
                mapping = {c: i for i, c in enumerate(wanted)}
                present = wanted
            self.class_to_idx = mapping
            self.classes = sorted(mapping, key=mapping.__getitem__)
            self.samples = [
                (p, mapping[c]) for c in sorted(present) for p in images_under(os.path.join(root, c), True)
            ]
        if not self.samples:
            raise FileNotFoundError(f"no images ({', '.join(IMG_EXTENSIONS)}) found under {root}")
        self.targets = [label for _, label in self.samples]
        self._reported = set()


class TinyImageNetDataset(ImageFiles):
    """Tiny-ImageNet-200 from its released folder layout (nothing is downloaded).

    ``root`` is the ``tiny-imagenet-200`` folder::

        wnids.txt                       the class ids, one per line
        train/<wnid>/images/*.JPEG      training images (500 per class in the release)
        val/images/*.JPEG               validation images (50 per class)
        val/val_annotations.txt         <file> TAB <wnid> TAB <x0> TAB <y0> TAB <x1> TAB <y1>
        test/                           unlabelled, ignored

    ``split`` is ``"train"`` or ``"val"``. Labels are the indices of the sorted wnids (what an
    ImageFolder over ``train/`` gives), the same for both splits. Samples are
    ``(PIL RGB image, label)``, or ``None`` for a file that cannot be decoded (warned once per
    file and process, then dropped and counted by the loader). A missing file or folder, or a bad
    line of ``val_annotations.txt``, raises a one-line error that names it.
    """

    def __init__(self, root: str | os.PathLike[str], split: str = "train") -> None:
        root = os.path.expanduser(os.fspath(root))
        if split not in ("train", "val"):
            raise ValueError(f"Tiny-ImageNet split must be train or val, got {split!r}")
        if not os.path.isdir(root):
            raise FileNotFoundError(f"Tiny-ImageNet folder not found: {root}")
        self.root = root
        self.split = split
        self.classes = sorted(self._read_wnids(os.path.join(root, "wnids.txt")))
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.samples = self._train_samples() if split == "train" else self._val_samples()
        self.targets = [label for _, label in self.samples]
        self._reported = set()

    @staticmethod
    def _read_wnids(path: str) -> list[str]:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Tiny-ImageNet class list not found: {path}")
        with open(path) as f:
            wnids = [ln.strip() for ln in f if ln.strip()]
        return checked_names(wnids, f"Tiny-ImageNet class list {path}")

    def _train_samples(self) -> list[tuple[str, int]]:
        samples = []
        for wnid in self.classes:
            folder = os.path.join(self.root, "train", wnid, "images")
            if not os.path.isdir(folder):
                raise FileNotFoundError(f"Tiny-ImageNet training folder not found: {folder} (listed in wnids.txt)")
            paths = images_under(folder, recursive=False)
            if not paths:
                raise FileNotFoundError(f"Tiny-ImageNet training folder {folder} has no images")
            samples.extend((p, self.class_to_idx[wnid]) for p in paths)
        return samples

    def _val_samples(self) -> list[tuple[str, int]]:
        ann = os.path.join(self.root, "val", "val_annotations.txt")
        images = os.path.join(self.root, "val", "images")
        if not os.path.isfile(ann):
            raise FileNotFoundError(f"Tiny-ImageNet validation annotations not found: {ann}")
        if not os.path.isdir(images):
            raise FileNotFoundError(f"Tiny-ImageNet validation folder not found: {images}")
        present = set(os.listdir(images))
        samples: dict[str, int] = {}
        with open(ann) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                fields = line.rstrip("\n").split("\t")
                where = f"{ann}:{lineno}"
                if len(fields) < 2 or not fields[0] or not fields[1]:
                    raise DataError(f"{where}: expected '<file>\\t<wnid>\\t...', got {line.strip()!r}")
                name, wnid = fields[0].strip(), fields[1].strip()
                if wnid not in self.class_to_idx:
                    raise DataError(f"{where}: class {wnid!r} is not in wnids.txt")
                if name not in present:
                    raise FileNotFoundError(f"{where}: image {os.path.join(images, name)} not found")
                if name in samples and samples[name] != self.class_to_idx[wnid]:
                    raise DataError(f"{where}: {name} is annotated twice with different classes")
                samples[name] = self.class_to_idx[wnid]
        if not samples:
            raise DataError(f"Tiny-ImageNet validation annotations {ann} list no image")
        return [(os.path.join(images, n), label) for n, label in sorted(samples.items())]

