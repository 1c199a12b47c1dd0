"""The real datasets' loading code on tiny stand-ins written in the real formats."""
import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from _synthetic_data import (aedat2_bytes, random_events, write_cifar, write_cifar10dvs,
                             write_imagenet)
from sj_distill.data import build_cifar10, build_cifar100, build_imagenet, check_dataset
from sj_distill.data import cifar10dvs as dvs
from sj_distill.data.cifar import Cutout
from sj_distill.data.errors import DatasetError

SMALL = dict(samples_per_class=5, test_per_class=2)


def _spikingjelly_datasets(monkeypatch):
    """SpikingJelly 2.x's CIFAR10-DVS reader and framing functions, imported without the
    package __init__ (it imports torchaudio, which fails on CUDA-mismatched builds); None on
    SpikingJelly 0.0.0.0.14 (its reader needs numpy < 2 and its package __init__)."""
    spec = importlib.util.find_spec("spikingjelly.datasets")
    if spec is None:
        return None
    package = types.ModuleType("spikingjelly.datasets")
    package.__path__ = list(spec.submodule_search_locations)
    monkeypatch.setitem(sys.modules, "spikingjelly.datasets", package)
    for name in ("cifar10_dvs", "utils", "base"):
        monkeypatch.delitem(sys.modules, f"spikingjelly.datasets.{name}", raising=False)
    try:
        reader = importlib.import_module("spikingjelly.datasets.cifar10_dvs")
        utils = importlib.import_module("spikingjelly.datasets.utils")
    except Exception:
        return None
    if not hasattr(reader, "_load_origin_data"):
        return None
    return reader, utils


def test_aedat_reader_and_framing_match_spikingjelly(tmp_path, monkeypatch):
    found = _spikingjelly_datasets(monkeypatch)
    if found is None:
        pytest.skip("SpikingJelly 2.x dataset functions not importable here")
    reader, utils = found
    rng = np.random.default_rng(1)
    events = random_events(rng, 103)
    path = tmp_path / "cifar10_cat_7.aedat"
    path.write_bytes(aedat2_bytes(events))
    ours = dvs.read_aedat2(path.read_bytes())
    theirs = reader._load_origin_data(path)
    for key in "txyp":
        assert np.array_equal(ours[key], np.asarray(theirs[key]).astype(np.int64)), key
        assert np.array_equal(ours[key], events[key]), key
    for T in (1, 3, 10, 200):  # 200 > 103 events: all go to the last frame
        expected = utils.integrate_events_by_fixed_frames_number(theirs, "number", T, 128, 128)
        assert np.array_equal(dvs.frames_by_number(ours, T), expected), T


def test_frames_by_number_by_hand():
    events = {"t": np.arange(7), "x": np.array([0, 1, 1, 2, 0, 0, 3]),
              "y": np.zeros(7, int), "p": np.array([1, 0, 0, 1, 1, 0, 1])}
    frames = dvs.frames_by_number(events, T=3, height=1, width=4)
    # 7 // 3 = 2 events per frame, the last frame takes events 4..6
    expected = np.zeros((3, 2, 1, 4), np.float32)
    expected[0, 1, 0, 0], expected[0, 0, 0, 1] = 1, 1
    expected[1, 0, 0, 1], expected[1, 1, 0, 2] = 1, 1
    expected[2, 1, 0, 0], expected[2, 0, 0, 0], expected[2, 1, 0, 3] = 1, 1, 1
    assert np.array_equal(frames, expected)


def test_truncated_aedat_is_one_error_naming_the_file():
    data = aedat2_bytes(random_events(np.random.default_rng(0), 4))[:-3]
    with pytest.raises(DatasetError, match=r"^x.aedat: 29 event bytes is not a whole number"):
        dvs.read_aedat2(data, "x.aedat")


def test_split_is_deterministic_per_class_by_file_number():
    samples = [dvs.Sample(label, f"cifar10_{c}_{i}.aedat", i, "p", "aedat")
               for label, c in enumerate(dvs.CLASSES) for i in (999, 5, 100, 99, 0, 101)]
    test = dvs.split(samples, False, test_per_class=3)
    train = dvs.split(list(reversed(samples)), True, test_per_class=3)
    assert [s.index for s in test[:3]] == [0, 5, 99]
    assert [s.index for s in train[:3]] == [100, 101, 999]
    assert len(test) == 30 and len(train) == 30
    assert not {(s.label, s.index) for s in test} & {(s.label, s.index) for s in train}
    # the real sizes: 0..99 test, 100..999 train per class
    full = [dvs.Sample(0, f"f_{i}", i, "p", "aedat") for i in np.random.permutation(1000)]
    assert sorted(s.index for s in dvs.split(full, False, 100)) == list(range(100))


def test_cache_key_changes_with_every_framing_parameter(tmp_path):
    write_cifar10dvs(tmp_path, per_class=1)
    samples, _ = dvs.spikingjelly_samples(tmp_path, T=10)
    base = dict(framing="spikingjelly", T=10, split_by="number", img_size=48,
                resize="public_code", test_per_class=100)
    key = dvs.cache_key(samples=samples, **base)
    assert key == dvs.cache_key(samples=list(reversed(samples)), **base)
    for change in (dict(framing="tonic"), dict(T=8), dict(split_by="time"), dict(img_size=64),
                   dict(resize="bilinear"), dict(test_per_class=50)):
        assert dvs.cache_key(samples=samples, **{**base, **change}) != key, change
    assert dvs.cache_key(samples=samples[1:], **base) != key


@pytest.mark.parametrize("layout", ["extract", "download"])
def test_spikingjelly_framing_loads_the_synthetic_folder(tmp_path, layout):
    written = write_cifar10dvs(tmp_path, per_class=5, layout=layout)
    test = dvs.CIFAR10DVS(tmp_path, train=False, resize="bilinear", verify_md5=False, **SMALL)
    train = dvs.CIFAR10DVS(tmp_path, train=True, verify_md5=False, **SMALL)
    assert (len(train), len(test)) == (30, 20)
    assert sorted(test.labels.tolist()) == sorted(list(range(10)) * 2)
    frames, label = test[2]  # class 1 (automobile), file 0
    assert frames.shape == (10, 2, 48, 48) and frames.dtype == torch.float32 and label == 1
    counts = dvs.frames_by_number(written["cifar10_automobile_0"], 10)
    assert torch.equal(frames, dvs.resize_frames(counts, 48, "bilinear"))  # float32 cache
    assert float(frames.sum()) == pytest.approx(counts.sum() * (48 / 128) ** 2, rel=1e-2)
    assert (tmp_path / "sj-distill-cache").is_dir()


def test_public_code_items_equal_the_public_loader_path_bit_for_bit(tmp_path):
    """The public loader: ToPILImage (float count frame -> the bytes 255 * count mod 256),
    Resize(48), ToTensor (bytes / 255 in float32), frame by frame; the cache must not round
    the items (float16 did, by up to 2.4e-4)."""
    from torchvision import transforms

    written = write_cifar10dvs(tmp_path, per_class=5)
    test = dvs.CIFAR10DVS(tmp_path, train=False, resize="public_code", verify_md5=False, **SMALL)
    frames, _ = test[2]  # class 1 (automobile), file 0
    assert frames.dtype == torch.float32
    counts = torch.as_tensor(dvs.frames_by_number(written["cifar10_automobile_0"], 10))
    wrapped = (counts.long() * 255 % 256).to(torch.uint8)  # ToPILImage's byte cast, made explicit
    public = transforms.Compose([transforms.ToPILImage(), transforms.Resize((48, 48)),
                                 transforms.ToTensor()])
    assert torch.equal(frames, torch.stack([public(frame) for frame in wrapped]))
    assert np.load(test.cache / "frames.npy", mmap_mode="r").dtype == np.uint8
    values = set(torch.unique(frames * 255).round().tolist())
    assert values <= set(range(256)) and len(values) > 2


def test_public_code_resize_zeroes_channel_0_where_channel_1_is_empty():
    """PIL resizes a two-channel (LA) image with premultiplied alpha: channel 0 survives only
    where the resized channel 1 is not 0 (hand-derived: left half channel 0, top half channel 1)."""
    counts = np.zeros((1, 2, 128, 128), np.float32)
    counts[0, 0, :, :64] = 1.0
    counts[0, 1, :64, :] = 1.0
    out = dvs.resize_frames(counts, 48, "public_code")[0]
    assert torch.equal(out[0, :20, :20], torch.ones(20, 20))  # both channels active
    assert torch.equal(out[0, 28:, :20], torch.zeros(20, 20))  # channel 1 empty: zeroed
    assert torch.equal(out[1, :20, 28:], torch.ones(20, 20))  # channel 1 is resized plainly


def test_public_code_resize_wraps_counts_like_the_uint8_conversion():
    counts = np.zeros((1, 2, 128, 128), np.float32)
    counts[0, 0] = 1.0
    counts[0, 1] = 2.0  # 510 wraps to 254
    out = dvs.resize_frames(counts, 48, "public_code")
    assert out.shape == (1, 2, 48, 48)
    assert torch.allclose(out[0, 0], torch.ones(48, 48))
    assert torch.allclose(out[0, 1], torch.full((48, 48), 254 / 255))


def test_cached_samples_are_reused_and_augmentation_flips_and_rolls(tmp_path):
    write_cifar10dvs(tmp_path, per_class=5)
    first = dvs.CIFAR10DVS(tmp_path, train=True, **SMALL)
    stamp = (first.cache / "frames.npy").stat().st_mtime_ns
    again = dvs.CIFAR10DVS(tmp_path, train=True, **SMALL)
    assert (again.cache / "frames.npy").stat().st_mtime_ns == stamp
    image = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4)
    seen = set()
    for seed in range(40):
        torch.manual_seed(seed)
        out = dvs.RandomFlipRoll(1)(image)
        for flip in (False, True):
            base = torch.flip(image, dims=(3,)) if flip else image
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    if torch.equal(out, torch.roll(base, (dy, dx), (2, 3))):
                        seen.add((flip, dy, dx))
    assert len(seen) >= 12  # both flips and most of the 9 shifts, nothing else


def test_partial_and_missing_folders_are_one_line_errors(tmp_path):
    with pytest.raises(DatasetError) as err:
        dvs.CIFAR10DVS(tmp_path / "none", train=True)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "none") in message
    assert "figshare" in message and "--data-dir" in message and "data.root" in message
    write_cifar10dvs(tmp_path, per_class=3)
    with pytest.raises(DatasetError, match=r"extract/airplane holds 3 recordings, expected 1000"):
        dvs.CIFAR10DVS(tmp_path, train=True)
    (tmp_path / "extract" / "dog").rename(tmp_path / "dog_elsewhere")
    with pytest.raises(DatasetError, match=r"CIFAR10-DVS not found in .*extract/<class>/\*\.aedat"):
        dvs.CIFAR10DVS(tmp_path, train=True)


def test_corrupt_zip_is_detected(tmp_path):
    write_cifar10dvs(tmp_path, per_class=3, layout="download")
    with pytest.raises(DatasetError, match=r"airplane.zip has the wrong MD5"):
        dvs.CIFAR10DVS(tmp_path, samples_per_class=3, test_per_class=1)
    (tmp_path / "download" / "cat.zip").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DatasetError, match=r"cat.zip is not a readable zip"):
        dvs.CIFAR10DVS(tmp_path, samples_per_class=3, test_per_class=1, verify_md5=False)


def test_tonic_framing_reads_aedat4_with_tonic(tmp_path):
    pytest.importorskip("tonic", reason="the optional 'dvs' extra is not installed")
    pytest.importorskip("aedat", reason="the optional 'dvs' extra is not installed")
    from tonic.transforms import ToFrame

    written = write_cifar10dvs(tmp_path, per_class=5, layout="tonic")
    test = dvs.CIFAR10DVS(tmp_path, train=False, framing="tonic", resize="bilinear", T=4,
                          **SMALL)
    frames, label = test[0]
    assert frames.shape == (4, 2, 48, 48) and label == 0
    frames = frames.float()
    events = written["cifar10_airplane_0"]
    structured = np.zeros(len(events["t"]), dtype=[("t", "<u8"), ("x", "<u2"), ("y", "<u2"),
                                                   ("p", "?")])
    for key in "txyp":
        structured[key] = events[key]
    counts = ToFrame(sensor_size=(128, 128, 2), n_time_bins=4)(structured)
    assert torch.allclose(frames, dvs.resize_frames(counts, 48, "bilinear"), atol=1e-2)
    assert counts.sum() > 0


def test_data_check_reports_counts(tmp_path):
    write_cifar10dvs(tmp_path, per_class=5)
    lines = check_dataset("cifar10dvs", str(tmp_path), **SMALL)
    assert lines[1].startswith("recordings per class: airplane 5, automobile 5")
    assert lines[2].startswith("split: 30 train / 20 test")


def test_cifar_loaders_read_torchvision_pickles(tmp_path):
    write_cifar(tmp_path)
    write_cifar(tmp_path, hundred=True)
    train, test = build_cifar10(str(tmp_path), verify=False)
    assert (len(train), len(test), train.num_classes, train.in_chans) == (30, 8, 10, 3)
    image, label = test[0]
    raw = torch.as_tensor(test.data[0]).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2023, 0.1994, 0.2010])
    assert torch.allclose(image, (raw - mean[:, None, None]) / std[:, None, None], atol=1e-6)
    assert label == test.targets[0]
    assert train[0][0].shape == (3, 32, 32)
    train, test = build_cifar100(str(tmp_path), verify=False)
    assert (len(train), len(test), train.num_classes) == (30, 8, 100)
    with pytest.raises(DatasetError, match=r"data_batch_1 has the wrong MD5"):
        build_cifar10(str(tmp_path))
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DatasetError, match=r"cifar-10-batches-py lacks test_batch \(a partial"):
        build_cifar10(str(tmp_path), verify=False)
    with pytest.raises(DatasetError, match=r"CIFAR-100: folder .*nowhere does not exist"):
        build_cifar100(str(tmp_path / "nowhere"))


def test_cutout_zeroes_one_clipped_square():
    torch.manual_seed(3)
    out = Cutout(16)(torch.ones(3, 32, 32))
    zeros = (out[0] == 0)
    rows, cols = zeros.any(1).nonzero().flatten(), zeros.any(0).nonzero().flatten()
    assert 8 <= len(rows) <= 16 and 8 <= len(cols) <= 16
    assert int(zeros.sum()) == len(rows) * len(cols)  # one rectangle
    assert torch.equal(out[0], out[2])


def test_imagenet_folder_loads_and_flags_unsorted_val(tmp_path):
    write_imagenet(tmp_path)
    train, test = build_imagenet(str(tmp_path), verify=False)
    assert (len(train), len(test), train.num_classes) == (4, 4, 2)
    assert train[0][0].shape == (3, 224, 224) and test[3][1] == 1
    with pytest.raises(DatasetError, match=r"2 classes, 4 train / 4 val images, expected 1000"):
        build_imagenet(str(tmp_path))
    val = tmp_path / "val"
    for image in list(val.rglob("*.JPEG")):
        image.rename(val / image.name)
    for folder in [p for p in val.iterdir() if p.is_dir()]:
        folder.rmdir()
    with pytest.raises(DatasetError, match=r"val has no class folders \(its images are not sorted"):
        build_imagenet(str(tmp_path), verify=False)


def test_spikingjelly_reads_the_synthetic_folder_and_we_read_its_frames(tmp_path, monkeypatch):
    """SpikingJelly 2.x's own CIFAR10DVS converts our synthetic .aedat files and frames them;
    our loader then reads SpikingJelly's frames folder and gets what it computes itself from
    the .aedat files."""
    found = _spikingjelly_datasets(monkeypatch)
    if found is None:
        pytest.skip("SpikingJelly 2.x dataset functions not importable here")
    reader, _ = found
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    write_cifar10dvs(ours, per_class=3)
    write_cifar10dvs(theirs, per_class=3)
    for aedat in sorted((theirs / "extract").rglob("*.aedat")):
        target = theirs / "events_np" / aedat.parent.name / (aedat.stem + ".npz")
        target.parent.mkdir(parents=True, exist_ok=True)
        reader._read_aedat_save_to_np(aedat, target)
    framed = reader.CIFAR10DVS(str(theirs), data_type="frame", frames_number=4,
                               split_by="number")
    assert len(framed) == 30 and framed[0][0].shape == (4, 2, 128, 128)
    options = dict(T=4, resize="bilinear", samples_per_class=3, test_per_class=1)
    from_sj = dvs.CIFAR10DVS(theirs, train=True, **options, augment=False)
    from_aedat = dvs.CIFAR10DVS(ours, train=True, **options, augment=False)
    assert dvs.spikingjelly_samples(theirs, 4)[0][0].kind == "sj_frames"
    assert len(from_sj) == len(from_aedat) == 20
    assert np.array_equal(from_sj.frames, from_aedat.frames)
    assert np.array_equal(from_sj.labels, from_aedat.labels)
