"""Tiny stand-ins for the real datasets, written byte for byte in the formats the real loaders
read: CIFAR10-DVS ``.aedat`` (AER-DAT 2.0, SpikingJelly's layout) and ``.aedat4`` (tonic's
layout), CIFAR pickled batches (torchvision's layout) and an ImageNet-style JPEG folder."""
from __future__ import annotations

import pickle
import struct
import zipfile
from pathlib import Path
from typing import Dict, List

import numpy as np

from sj_distill.data.cifar10dvs import CLASSES


def random_events(rng: np.random.Generator, n: int) -> Dict[str, np.ndarray]:
    """``n`` events on the 128x128 sensor with increasing timestamps (microseconds)."""
    return {"t": np.cumsum(rng.integers(1, 50, n)).astype(np.int64),
            "x": rng.integers(0, 128, n), "y": rng.integers(0, 128, n), "p": rng.integers(0, 2, n)}


def aedat2_bytes(events: Dict[str, np.ndarray]) -> bytes:
    """An AER-DAT 2.0 file holding ``events`` given in SpikingJelly's convention (the inverse of
    its reader: x_bits = 127 - y, y_bits = 127 - x, p_bit = 1 - p)."""
    x_bits = 127 - np.asarray(events["y"], np.uint32)
    y_bits = 127 - np.asarray(events["x"], np.uint32)
    p_bit = 1 - np.asarray(events["p"], np.uint32)
    address = (y_bits << 8) | (x_bits << 1) | p_bit
    words = np.empty(2 * len(address), ">u4")
    words[0::2], words[1::2] = address, np.asarray(events["t"], np.uint32)
    header = b"#!AER-DAT2.0\r\n# synthetic stand-in written by sj-distill's tests\r\n"
    return header + words.tobytes()


def _event_packet(events: Dict[str, np.ndarray]) -> bytes:
    """A size-prefixed flatbuffer ``EventPacket`` (identifier ``EVTS``) of 16-byte ``Event``
    structs ``{t: int64, x: int16, y: int16, on: bool}``, laid out so every field is aligned."""
    n = len(events["t"])
    packed = np.zeros(n, np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("on", "u1"),
                                   ("pad", "V3")]))
    packed["t"], packed["x"], packed["y"], packed["on"] = (events["t"], events["x"], events["y"],
                                                           events["p"])
    body = struct.pack("<I", 16) + b"EVTS"        # root table at byte 20 of the prefixed buffer
    body += struct.pack("<HHH", 6, 8, 4) + b"\0\0"  # vtable: 6 bytes, table 8 bytes, field at +4
    body += struct.pack("<iI", 8, 4)              # table: vtable 8 bytes back, vector 4 ahead
    body += struct.pack("<I", n) + packed.tobytes()
    return struct.pack("<I", len(body)) + body


def _ioheader(description: str) -> bytes:
    """A flatbuffer ``Ioheader`` (identifier ``IOHE``): default compression and data-table
    position, and the XML ``description``."""
    text = description.encode()
    body = struct.pack("<I", 20) + b"IOHE"
    body += struct.pack("<HHHHH", 10, 8, 0, 0, 4) + b"\0\0"
    body += struct.pack("<iI", 12, 4)
    body += struct.pack("<I", len(text)) + text + b"\0"
    return body + b"\0" * (-len(body) % 4)


_DESCRIPTION = ('<dv version="2.0"><node name="outInfo" path="/outInfo/">'
                '<node name="0" path="/outInfo/0/">'
                '<attr key="compression" type="string">NONE</attr>'
                '<attr key="typeIdentifier" type="string">EVTS</attr>'
                '<node name="info" path="/outInfo/0/info/">'
                '<attr key="sizeX" type="int">128</attr><attr key="sizeY" type="int">128</attr>'
                '</node></node></node></dv>')


def aedat4_bytes(events: Dict[str, np.ndarray]) -> bytes:
    """An uncompressed AEDAT 4.0 file with one event stream (id 0) and one packet."""
    header = _ioheader(_DESCRIPTION)
    packet = _event_packet(events)
    return (b"#!AER-DAT4.0\r\n" + struct.pack("<I", len(header)) + header
            + struct.pack("<II", 0, len(packet)) + packet)


def write_cifar10dvs(root: Path, per_class: int = 5, layout: str = "extract",
                     events_per_file: int = 60, seed: int = 0) -> Dict[str, Dict]:
    """A CIFAR10-DVS folder with ``per_class`` recordings per class, named as the real ones
    (``cifar10_<class>_<i>``). ``layout``: ``extract`` (``root/extract/<class>/*.aedat``),
    ``download`` (``root/download/<class>.zip``) or ``tonic``
    (``root/CIFAR10DVS/<class>/*.aedat4``). Returns ``{file name: events}``."""
    rng = np.random.default_rng(seed)
    written = {}
    for name in CLASSES:
        files = {}
        for i in range(per_class):
            events = random_events(rng, events_per_file + i)
            stem = f"cifar10_{name}_{i}"
            written[stem] = events
            files[stem] = events
        if layout == "tonic":
            folder = root / "CIFAR10DVS" / name
            folder.mkdir(parents=True, exist_ok=True)
            for stem, events in files.items():
                (folder / f"{stem}.aedat4").write_bytes(aedat4_bytes(events))
        elif layout == "extract":
            folder = root / "extract" / name
            folder.mkdir(parents=True, exist_ok=True)
            for stem, events in files.items():
                (folder / f"{stem}.aedat").write_bytes(aedat2_bytes(events))
        else:
            (root / "download").mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(root / "download" / f"{name}.zip", "w") as archive:
                for stem, events in files.items():
                    archive.writestr(f"{name}/{stem}.aedat", aedat2_bytes(events))
    return written


def write_cifar(root: Path, hundred: bool = False, train_per_file: int = 6, test: int = 8,
                seed: int = 0) -> None:
    """torchvision's CIFAR layout with tiny pickled batches (``data`` uint8 ``[N, 3072]``,
    ``labels`` or ``fine_labels``)."""
    rng = np.random.default_rng(seed)
    classes = 100 if hundred else 10
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    key = "fine_labels" if hundred else "labels"

    def batch(n: int) -> Dict:
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                key: rng.integers(0, classes, n).tolist()}

    names = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    for name in names:
        (folder / name).write_bytes(pickle.dumps(batch(train_per_file * (5 if hundred else 1))))
    (folder / ("test" if hundred else "test_batch")).write_bytes(pickle.dumps(batch(test)))
    meta = {"fine_label_names": [f"c{i}" for i in range(100)]} if hundred else \
        {"label_names": [f"c{i}" for i in range(10)]}
    (folder / ("meta" if hundred else "batches.meta")).write_bytes(pickle.dumps(meta))


def write_imagenet(root: Path, classes: List[str] = ("n01440764", "n01443537"),
                   per_class: int = 2, size=(40, 30)) -> None:
    """``root/{train,val}/<wnid>/*.JPEG`` with small random JPEGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for wnid in classes:
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG", quality=90)
