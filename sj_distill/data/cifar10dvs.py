"""CIFAR10-DVS (Li et al., Frontiers in Neuroscience 2017), framed the two ways the field does.

* ``framing="spikingjelly"``: SpikingJelly's ``CIFAR10DVS(root, data_type='frame',
  frames_number=T, split_by='number')``, what the rate-BP / BRD / STAA code uses. ``root`` is
  SpikingJelly's dataset root; any of its stages is read, most processed first:
  ``frames_number_{T}_split_by_number/<class>/*.npz`` (SpikingJelly's own frames, key
  ``frames``), ``events_np/<class>/*.npz`` (keys ``t, x, y, p``), ``extract/<class>/*.aedat``
  or the ten downloaded ``download/<class>.zip`` (read in place, MD5-checked). The ``.aedat``
  files are AER-DAT 2.0: ``#`` header lines, then big-endian uint32 pairs (address,
  timestamp); SpikingJelly reads x from address bits 1-7, y from bits 8-14, polarity from bit
  0 and stores ``x = 127 - y_bits, y = 127 - x_bits, p = 1 - p_bit``. ``split_by='number'``
  cuts the N events into T slices of ``N // T`` events (the last takes the rest) and counts
  each slice into a ``[2, 128, 128]`` frame. This module reads and frames them itself (same
  arithmetic, tested against SpikingJelly 2.0's functions), because SpikingJelly
  0.0.0.0.14's reader uses ``np.bool``/``np.fromstring``, which numpy 2 removed, and both
  versions try to download when a folder is incomplete.
* ``framing="tonic"`` (the ``dvs`` extra): tonic's ``CIFAR10DVS`` files, the ``.aedat4``
  re-release in ``root/CIFAR10DVS/<class>/``, read with ``tonic.io.read_aedat4`` (what tonic's
  dataset class does) and framed with ``tonic.transforms.ToFrame(sensor_size=(128, 128, 2),
  n_time_bins=T)`` (equal time bins).

Frames are resized from 128x128 to ``img_size`` (48): ``resize="public_code"`` does what the
public rate-BP code's loader does (``ToPILImage -> Resize -> ToTensor`` per frame, items equal
to that path bit for bit). Two side effects come with it (docs/recipes.md gives the numbers):
the count frames become 8-bit images as ``255 * count`` wrapped modulo 256 (count ``k`` in
1..255 becomes ``(256 - k) / 255``: 1.0 for one event, (0.7, 1] only for counts 1..77, 0 for
256; the wrap is made explicit here so it is the same on every CPU), and a two-channel frame
is a PIL ``LA`` image, which PIL resizes with premultiplied alpha: channel 0 is weighted by
channel 1 and set to 0 wherever the resized channel 1 is 0. ``resize="bilinear"`` keeps counts
(antialiased bilinear, our alternative). The split is deterministic per
class: files are ordered by the number in their name and the first ``test_per_class`` (100)
are the test set, the rest (900) the training set (the split SpikingJelly 2.0 calls
``CIFAR10DVSTEBNSplit``). Framed, resized samples are cached once under
``cache_dir/<key>/`` where the key holds every framing, split and resize parameter and a digest
of the file list. Training augmentation (as the public code): horizontal flip with p=0.5 and a
circular roll of up to +-5 pixels in x and y.
"""
from __future__ import annotations

import hashlib
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .errors import DatasetError, require_root, where_to_put
from .sources import DVS_DOWNLOAD, DVS_LAYOUT

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")
SENSOR = 128
FRAMINGS = ("spikingjelly", "tonic")
RESIZES = ("public_code", "bilinear")
SPLIT_BYS = ("number",)
CACHE_VERSION = 2
#: What the cache stores per resize: the public path's 8-bit pixels (items are ``byte / 255`` in
#: float32, as ``ToTensor`` computes them) or the resized counts in float32.
CACHE_DTYPES = {"public_code": np.uint8, "bilinear": np.float32}
SJ_DOWNLOAD = DVS_DOWNLOAD["spikingjelly"]
TONIC_DOWNLOAD = DVS_DOWNLOAD["tonic"]
#: MD5 of the ten original archives (as listed in SpikingJelly's CIFAR10DVS.resource_url_md5)
SJ_ZIP_MD5 = {
    "airplane": "0afd5c4bf9ae06af762a77b180354fdd",
    "automobile": "8438dfeba3bc970c94962d995b1b9bdd",
    "bird": "a9c207c91c55b9dc2002dc21c684d785", "cat": "52c63c677c2b15fa5146a8daf4d56687",
    "deer": "b6bf21f6c04d21ba4e23fc3e36c8a4a3", "dog": "f379ebdf6703d16e0a690782e62639c3",
    "frog": "cad6ed91214b1c7388a5f6ee56d08803", "horse": "e7cbbf77bec584ffbf913f00e682782a",
    "ship": "41c7bd7d6b251be82557c6cce9a7d5c9", "truck": "89f3922fd147d9aeff89e76a2b0b70a7",
}


@dataclass(frozen=True)
class Sample:
    """One recording: its class ``label``, file ``name``, the number in its name, and where it
    is: a file ``path`` or a ``member`` of the zip at ``path``; ``kind`` is ``aedat``,
    ``events_np``, ``sj_frames`` or ``aedat4``."""

    label: int
    name: str
    index: int
    path: str
    kind: str
    member: Optional[str] = None


def sample_index(name: str) -> int:
    """The number at the end of a file's stem (``cifar10_cat_17.aedat`` -> 17), else -1."""
    match = re.search(r"(\d+)$", Path(name).stem)
    return int(match.group(1)) if match else -1


def read_aedat2(data: bytes, source: str = "<bytes>") -> Dict[str, np.ndarray]:
    """Events of a CIFAR10-DVS ``.aedat`` file as SpikingJelly stores them: ``t`` (uint32,
    microseconds), ``x``, ``y`` (0..127) and ``p`` (0/1) arrays of equal length."""
    start = 0
    while data[start:start + 1] == b"#":
        newline = data.find(b"\n", start)
        if newline < 0:
            raise DatasetError(f"{source}: the AER-DAT header never ends; the file is truncated "
                               "or corrupt, extract it again from its zip")
        start = newline + 1
    body = data[start:]
    if len(body) % 8:
        raise DatasetError(f"{source}: {len(body)} event bytes is not a whole number of 8-byte "
                           "events; the file is truncated or corrupt, extract it again")
    words = np.frombuffer(body, dtype=">u4")
    address, t = words[0::2], words[1::2]
    x_bits = (address & 0xFE) >> 1
    y_bits = (address & 0x7F00) >> 8
    p_bit = address & 1
    return {"t": t.astype(np.int64), "x": (127 - y_bits).astype(np.int64),
            "y": (127 - x_bits).astype(np.int64), "p": (1 - p_bit).astype(np.int64)}


def frames_by_number(events: Dict[str, np.ndarray], T: int, height: int = SENSOR,
                     width: int = SENSOR) -> np.ndarray:
    """SpikingJelly's ``split_by='number'`` framing: ``[T, 2, H, W]`` float32 event counts.

    With N events and ``d = N // T``, frame ``i`` counts events ``i*d .. (i+1)*d - 1`` and the
    last frame also takes the remainder (all of them when ``N < T``); channel 1 holds ``p != 0``.
    """
    n = len(events["t"])
    step = n // T
    frame = np.full(n, T - 1, np.int64) if step == 0 else np.minimum(np.arange(n) // step, T - 1)
    channel = (np.asarray(events["p"]) != 0).astype(np.int64)
    flat = ((frame * 2 + channel) * height + np.asarray(events["y"], np.int64)) * width \
        + np.asarray(events["x"], np.int64)
    return np.bincount(flat, minlength=T * 2 * height * width).reshape(
        T, 2, height, width).astype(np.float32)


def public_code_pixels(frames: np.ndarray, size: int) -> torch.Tensor:
    """``[T, 2, 128, 128]`` counts -> the public loader's resized 8-bit frames
    ``[T, 2, size, size]`` uint8: ``255 * count`` wrapped modulo 256, each frame a PIL ``LA``
    image resized by PIL (bilinear, premultiplied alpha)."""
    from torchvision.transforms import functional as TF

    counts = torch.as_tensor(np.asarray(frames, np.float32))
    pixels = ((counts.round().long() * 255) % 256).to(torch.uint8)
    return torch.stack([TF.pil_to_tensor(TF.resize(TF.to_pil_image(frame), [size, size]))
                        for frame in pixels])


def pixels_to_float(pixels: torch.Tensor) -> torch.Tensor:
    """8-bit frames -> float32 ``byte / 255``, the division ``ToTensor`` does."""
    return pixels.to(torch.float32).div(255)


def resize_frames(frames: np.ndarray, size: int, mode: str) -> torch.Tensor:
    """``[T, 2, 128, 128]`` counts -> ``[T, 2, size, size]`` float32 (see the module docstring)."""
    if mode == "public_code":
        return pixels_to_float(public_code_pixels(frames, size))
    counts = torch.as_tensor(np.asarray(frames, np.float32))
    if counts.shape[-1] == size:
        return counts
    return F.interpolate(counts, size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False)


def _class_files(folder: Path, suffix: str, kind: str, label: int) -> List[Sample]:
    return [Sample(label, p.name, sample_index(p.name), str(p), kind)
            for p in sorted(folder.iterdir()) if p.name.endswith(suffix)]


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


_VERIFIED = set()


def verify_zip(archive: Path, name: str) -> None:
    """A :class:`DatasetError` unless ``archive`` has the MD5 of the original ``name.zip``
    (each file version is hashed once per process)."""
    stat = archive.stat()
    version = (str(archive), stat.st_size, stat.st_mtime_ns)
    if version in _VERIFIED:
        return
    if _md5(archive) == SJ_ZIP_MD5[name]:
        _VERIFIED.add(version)
    else:
        raise DatasetError(f"CIFAR10-DVS: {archive} has the wrong MD5 (a partial or corrupt "
                           f"download): delete it and download it again from {SJ_DOWNLOAD}")


def _zip_samples(root: Path, verify_md5: bool) -> List[Sample]:
    samples = []
    for label, name in enumerate(CLASSES):
        archive = root / "download" / f"{name}.zip"
        if not archive.is_file():
            raise DatasetError(f"CIFAR10-DVS: {archive} is missing (partial download: expected "
                               f"the ten class zips {', '.join(CLASSES)}); "
                               f"{where_to_put(root, SJ_DOWNLOAD)}")
        if verify_md5:
            verify_zip(archive, name)
        try:
            with zipfile.ZipFile(archive) as handle:
                members = sorted(m for m in handle.namelist() if m.endswith(".aedat"))
        except zipfile.BadZipFile:
            raise DatasetError(f"CIFAR10-DVS: {archive} is not a readable zip (a partial or "
                               f"corrupt download): delete it and download it again from "
                               f"{SJ_DOWNLOAD}") from None
        samples += [Sample(label, Path(m).name, sample_index(m), str(archive), "aedat", m)
                    for m in members]
    return samples


def spikingjelly_samples(root: Path, T: int, split_by: str = "number",
                         verify_md5: bool = True) -> Tuple[List[Sample], str]:
    """Every recording under SpikingJelly's root, from its most processed stage, and the name
    of that stage."""
    frames = root / f"frames_number_{T}_split_by_{split_by}"
    stages = [(frames, ".npz", "sj_frames"), (root / "events_np", ".npz", "events_np"),
              (root / "extract", ".aedat", "aedat")]
    for folder, suffix, kind in stages:
        unfinished = folder.with_name(folder.name + ".building")
        if folder.is_dir() and not unfinished.exists() \
                and all((folder / c).is_dir() for c in CLASSES):
            return [s for label, c in enumerate(CLASSES)
                    for s in _class_files(folder / c, suffix, kind, label)], str(folder)
    if (root / "download").is_dir():
        return _zip_samples(root, verify_md5), str(root / "download")
    raise DatasetError(
        f"CIFAR10-DVS not found in {root}: expected SpikingJelly's layout, one of "
        f"download/<class>.zip, extract/<class>/*.aedat, events_np/<class>/*.npz for the 10 "
        f"classes ({', '.join(CLASSES)}); {where_to_put(root, SJ_DOWNLOAD)}")


def tonic_samples(root: Path) -> Tuple[List[Sample], str]:
    """Every ``.aedat4`` recording of tonic's ``CIFAR10DVS`` folder."""
    folder = root if all((root / c).is_dir() for c in CLASSES) else root / "CIFAR10DVS"
    if not all((folder / c).is_dir() for c in CLASSES):
        zipped = " (found zips: extract CIFAR10DVS.zip and the class zips inside it)" \
            if folder.is_dir() and any(folder.glob("*.zip")) else ""
        raise DatasetError(
            f"CIFAR10-DVS (tonic) not found in {root}: expected tonic's layout "
            f"CIFAR10DVS/<class>/*.aedat4 for the 10 classes{zipped}; "
            f"{where_to_put(root, TONIC_DOWNLOAD)}")
    return [s for label, c in enumerate(CLASSES)
            for s in _class_files(folder / c, ".aedat4", "aedat4", label)], str(folder)


def check_counts(samples: List[Sample], where: str, samples_per_class: Optional[int],
                 test_per_class: int) -> List[int]:
    """Recordings per class; a :class:`DatasetError` for a partial folder."""
    counts = [0] * len(CLASSES)
    for s in samples:
        counts[s.label] += 1
    for label, count in enumerate(counts):
        if samples_per_class is not None and count != samples_per_class:
            raise DatasetError(
                f"CIFAR10-DVS: {where}/{CLASSES[label]} holds {count} recordings, expected "
                f"{samples_per_class} (a partial download or extraction): extract or download "
                f"that class again (data.options.samples_per_class=null skips this check)")
        if count <= test_per_class:
            raise DatasetError(f"CIFAR10-DVS: {where}/{CLASSES[label]} holds {count} "
                               f"recordings, not more than test_per_class={test_per_class}")
    return counts


def split(samples: List[Sample], train: bool, test_per_class: int) -> List[Sample]:
    """The deterministic split: per class, files ordered by (number in the name, name); the
    first ``test_per_class`` are the test set."""
    chosen = []
    for label in range(len(CLASSES)):
        ordered = sorted((s for s in samples if s.label == label), key=lambda s: (s.index, s.name))
        chosen += ordered[test_per_class:] if train else ordered[:test_per_class]
    return chosen


def load_counts(sample: Sample, T: int) -> np.ndarray:
    """``[T, 2, 128, 128]`` event counts of one recording."""
    if sample.kind == "sj_frames":
        with np.load(sample.path) as stored:
            frames = stored["frames"]
        if frames.shape[0] != T:
            raise DatasetError(f"CIFAR10-DVS: {sample.path} holds {frames.shape[0]} frames, "
                               f"expected {T}; delete that SpikingJelly frames folder")
        return frames
    if sample.kind == "events_np":
        with np.load(sample.path) as stored:
            return frames_by_number({k: stored[k] for k in "txyp"}, T)
    if sample.kind == "aedat":
        if sample.member is None:
            data = Path(sample.path).read_bytes()
        else:
            with zipfile.ZipFile(sample.path) as handle:
                data = handle.read(sample.member)
        source = sample.path + (f":{sample.member}" if sample.member else "")
        return frames_by_number(read_aedat2(data, source), T)
    from tonic.io import read_aedat4
    from tonic.transforms import ToFrame

    events = read_aedat4(sample.path)
    events.dtype.names = ["t", "x", "y", "p"]
    return ToFrame(sensor_size=(SENSOR, SENSOR, 2), n_time_bins=T)(events)


def cache_key(framing: str, T: int, split_by: str, img_size: int, resize: str,
              test_per_class: int, samples: List[Sample]) -> str:
    """A folder name holding every parameter that changes the cached tensors, plus a digest of
    the recordings (names and sizes) and the stage they were read from."""
    listing = hashlib.sha1()
    for s in sorted(samples, key=lambda s: (s.label, s.name)):
        size = os.path.getsize(s.path)
        listing.update(f"{s.label}/{s.name}/{s.kind}/{size}/{s.member}\n".encode())
    return (f"{framing}-T{T}-{split_by}-{img_size}px-{resize}-test{test_per_class}"
            f"-v{CACHE_VERSION}-{listing.hexdigest()[:12]}")


def _build_cache(chosen: List[Sample], out: Path, T: int, img_size: int, resize: str) -> None:
    """Frame, resize and store ``chosen`` as ``frames.npy`` ``[N, T, 2, S, S]`` (uint8 pixels
    for ``public_code``, float32 counts for ``bilinear``: :data:`CACHE_DTYPES`) and
    ``labels.npy`` ``[N]`` int64, written under temporary names and renamed when complete."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"frames.{os.getpid()}.tmp.npy"
    frames = np.lib.format.open_memmap(tmp, mode="w+", dtype=CACHE_DTYPES[resize],
                                       shape=(len(chosen), T, 2, img_size, img_size))
    for i, sample in enumerate(chosen):
        counts = load_counts(sample, T)
        resized = (public_code_pixels(counts, img_size) if resize == "public_code"
                   else resize_frames(counts, img_size, resize))
        frames[i] = resized.numpy()
    frames.flush()
    del frames
    np.save(out / "labels.npy", np.array([s.label for s in chosen], np.int64))
    os.replace(tmp, out / "frames.npy")


class RandomFlipRoll:
    """Training augmentation of the public rate-BP code on ``[T, C, H, W]``: flip W with
    probability 1/2, then roll by integers drawn from ``[-max_roll, max_roll]`` along H and W
    (circularly); torch's RNG. Done as one gather: output pixel ``(i, j)`` is input pixel
    ``((i - dy) mod H, c((j - dx) mod W))`` with ``c(k) = W - 1 - k`` when flipped."""

    def __init__(self, max_roll: int = 5):
        self.max_roll = max_roll

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        height, width = frames.shape[-2:]
        flip = bool(torch.rand(()) < 0.5)
        dy, dx = torch.randint(-self.max_roll, self.max_roll + 1, (2,)).tolist()
        rows = (torch.arange(height) - dy) % height
        cols = (torch.arange(width) - dx) % width
        if flip:
            cols = width - 1 - cols
        return frames[..., rows[:, None], cols[None, :]]


def discover(root, framing: str = "spikingjelly", T: int = 10, split_by: str = "number",
             samples_per_class: Optional[int] = 1000, test_per_class: int = 100,
             verify_md5: bool = True) -> Tuple[Path, List[Sample], str, List[int]]:
    """Validate parameters and folder: ``(root, samples, where, counts per class)``."""
    if framing not in FRAMINGS:
        raise ValueError(f"data.options.framing must be one of {FRAMINGS}, got {framing!r}")
    if split_by not in SPLIT_BYS:
        raise ValueError(f"data.options.split_by must be one of {SPLIT_BYS}, got {split_by!r}")
    download = SJ_DOWNLOAD if framing == "spikingjelly" else TONIC_DOWNLOAD
    root = require_root(root, "CIFAR10-DVS", DVS_LAYOUT[framing], download)
    if framing == "tonic":
        try:
            import tonic  # noqa: F401
        except ImportError:
            raise DatasetError("CIFAR10-DVS framing 'tonic' needs the optional dvs extra: "
                               "pip install 'sj-distill[dvs]' (tonic and aedat)") from None
        samples, where = tonic_samples(root)
    else:
        samples, where = spikingjelly_samples(root, T, split_by, verify_md5)
    counts = check_counts(samples, where, samples_per_class, test_per_class)
    return root, samples, where, counts


class CIFAR10DVS(Dataset):
    """Framed CIFAR10-DVS: items are ``(frames [T, 2, img_size, img_size] float32, label)``;
    with ``resize="public_code"`` equal, bit for bit, to the public rate-BP loader's frames.

    Args:
        root: the dataset folder (see the module docstring for each framing's layout).
        train: the training split (900 per class) or the test split (100 per class).
        framing: ``"spikingjelly"`` or ``"tonic"``.
        T: frames per recording.
        img_size: output height and width (48).
        resize: ``"public_code"`` or ``"bilinear"``.
        split_by: SpikingJelly's ``split_by`` (``"number"``).
        samples_per_class: recordings each class must hold (1000); ``None`` skips the check.
        test_per_class: test recordings per class (100).
        cache_dir: where framed samples are cached (default ``root/sj-distill-cache``).
        augment: flip + roll (training split only).
        verify_md5: check the downloaded zips' MD5 when reading from ``download/``.
    """

    num_classes = len(CLASSES)
    in_chans = 2
    time_major = True

    def __init__(self, root, train: bool = True, framing: str = "spikingjelly", T: int = 10,
                 img_size: int = 48, resize: str = "public_code", split_by: str = "number",
                 samples_per_class: Optional[int] = 1000, test_per_class: int = 100,
                 cache_dir: Optional[str] = None, augment: bool = True, max_roll: int = 5,
                 verify_md5: bool = True):
        if resize not in RESIZES:
            raise ValueError(f"data.options.resize must be one of {RESIZES}, got {resize!r}")
        root, samples, _, _ = discover(root, framing, T, split_by, samples_per_class,
                                       test_per_class, verify_md5=False)
        key = cache_key(framing, T, split_by, img_size, resize, test_per_class, samples)
        self.cache = Path(cache_dir or root / "sj-distill-cache") / key / \
            ("train" if train else "test")
        from ..engine import distributed

        if distributed.is_main() and not (self.cache / "frames.npy").is_file():
            if verify_md5:  # checksums only when the zips are about to be read
                for archive in sorted({Path(s.path) for s in samples if s.member is not None}):
                    verify_zip(archive, archive.stem)
            _build_cache(split(samples, train, test_per_class), self.cache, T, img_size, resize)
        distributed.barrier()
        self.frames = np.load(self.cache / "frames.npy", mmap_mode="r")
        self.labels = np.load(self.cache / "labels.npy")
        self.transform = RandomFlipRoll(max_roll) if train and augment else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        frames = torch.from_numpy(np.array(self.frames[index]))
        if frames.dtype == torch.uint8:
            frames = pixels_to_float(frames)
        if self.transform is not None:
            frames = self.transform(frames)
        return frames, int(self.labels[index])


def check(root, framing: str = "spikingjelly", T: int = 10, split_by: str = "number",
          samples_per_class: Optional[int] = 1000, test_per_class: int = 100,
          verify_md5: bool = True, **_ignored) -> List[str]:
    """Lines describing a valid folder (``sj-distill data check``); a :class:`DatasetError`
    otherwise. Reads the first and last recording of every class to catch corrupt files."""
    root, samples, where, counts = discover(root, framing, T, split_by, samples_per_class,
                                            test_per_class, verify_md5)
    for label in range(len(CLASSES)):
        own = sorted((s for s in samples if s.label == label), key=lambda s: (s.index, s.name))
        for sample in (own[0], own[-1]):
            load_counts(sample, T)
    per_class = ", ".join(f"{c} {n}" for c, n in zip(CLASSES, counts))
    return [f"CIFAR10-DVS ({framing} framing) read from {where}",
            f"recordings per class: {per_class}",
            f"split: {sum(counts) - test_per_class * len(CLASSES)} train / "
            f"{test_per_class * len(CLASSES)} test (first {test_per_class} per class by file "
            f"number are test)"]
