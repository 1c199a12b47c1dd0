"""Fashion-MNIST: the folder layouts it accepts (on tiny idx stand-ins), its errors, the fixed
subset, the real files when Debian's package is installed, and the ``csnn`` student against
SpikingJelly's own example network."""
import gzip
import struct
from pathlib import Path

import pytest
import torch

from sj_distill.data import check_dataset, fashion_mnist
from sj_distill.data.errors import DatasetError
from sj_distill.registry import DATASETS

REAL = fashion_mnist.DEBIAN_FOLDER
N_TRAIN, N_TEST = 40, 20


def idx_bytes(array: torch.Tensor) -> bytes:
    """The idx (SN3) encoding of a uint8 tensor: magic 0x0000080N, big-endian dims, data."""
    header = struct.pack(">I", 0x0800 + array.dim())
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.numpy().tobytes()


def stand_in(folder: Path, gz: bool, seed: int = 0):
    """Write the four files with random images and labels 0..9 repeating; return them."""
    g = torch.Generator().manual_seed(seed)
    data = {}
    for split, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        labels = (torch.arange(n) * 7 % 10).to(torch.uint8)
        data[split] = (images, labels)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{split}-{kind}-ubyte"
            payload = idx_bytes(array)
            folder.mkdir(parents=True, exist_ok=True)
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(payload))
            else:
                (folder / name).write_bytes(payload)
    return data


def assert_same(dataset, images, labels):
    assert len(dataset) == len(labels)
    for i in (0, len(labels) - 1):
        x, y = dataset[i]
        assert x.shape == (1, 28, 28) and x.dtype == torch.float32
        assert torch.equal(x[0], images[i].float() / 255)
        assert y == int(labels[i])
    assert (dataset.num_classes, dataset.in_chans) == (10, 1)


@pytest.mark.parametrize("layout", ["debian-gz", "flat", "torchvision-raw"])
def test_layouts_read_the_same_images(tmp_path, layout):
    root = tmp_path / "data"
    folder = root / "FashionMNIST" / "raw" if layout == "torchvision-raw" else root
    written = stand_in(folder, gz=layout == "debian-gz")
    cache = tmp_path / "cache"
    train, test = fashion_mnist.build(root, verify=False, cache_dir=str(cache))
    assert_same(train, *written["train"])
    assert_same(test, *written["t10k"])
    # only the gzipped folder needs the decompressed copy in torchvision's layout
    copies = list(cache.glob("*/FashionMNIST/raw"))
    assert len(copies) == (layout != "torchvision-raw")
    if copies:
        assert sorted(p.name for p in copies[0].iterdir()) == sorted(fashion_mnist.FILES)


def test_each_source_folder_gets_its_own_cache(tmp_path):
    first = stand_in(tmp_path / "a", gz=True, seed=0)
    second = stand_in(tmp_path / "b", gz=True, seed=1)
    for folder, written in (("a", first), ("b", second), ("a", first)):
        train, _ = fashion_mnist.build(tmp_path / folder, verify=False,
                                       cache_dir=str(tmp_path / "cache"))
        assert_same(train, *written["train"])


def test_no_folder_uses_the_debian_folder(tmp_path, monkeypatch):
    written = stand_in(tmp_path / "debian", gz=True)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FOLDER", tmp_path / "debian")
    train, _ = DATASETS.build("fashion-mnist", root=None, img_size=28, T=4, verify=False,
                              cache_dir=str(tmp_path / "cache"))
    assert_same(train, *written["train"])


def test_missing_data_names_both_ways_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FOLDER", tmp_path / "absent")
    with pytest.raises(DatasetError) as err:
        fashion_mnist.build(None)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"Fashion-MNIST: no data folder given and {tmp_path / 'absent'}")
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--data-dir DIR" in message and "data.download: true" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"^Fashion-MNIST: .*empty does not hold the four "
                                           r"idx files .*apt-get install"):
        fashion_mnist.build(tmp_path / "empty")


def test_corrupt_gzip_is_one_error(tmp_path):
    stand_in(tmp_path / "data", gz=True)
    path = tmp_path / "data" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz cannot be decompressed"):
        fashion_mnist.build(tmp_path / "data", verify=False, cache_dir=str(tmp_path / "c"))
    assert not list((tmp_path / "c").glob("*/FashionMNIST/raw/train-images*"))


def test_counts_are_checked(tmp_path):
    stand_in(tmp_path / "data", gz=False)
    with pytest.raises(DatasetError, match=f"{N_TRAIN} train / {N_TEST} test images .*expected "
                                           "60000 / 10000"):
        fashion_mnist.build(tmp_path / "data", cache_dir=str(tmp_path / "c"))


def test_img_size_other_than_28_is_refused(tmp_path):
    with pytest.raises(ValueError, match="data.img_size must be 28 for fashion-mnist, got 32"):
        fashion_mnist.build(tmp_path, img_size=32)


def test_balanced_subset_takes_the_first_of_each_class():
    labels = torch.tensor([3, 1, 3, 0, 1, 2, 0, 3, 2, 1, 4, 5, 6, 7, 8, 9, 4, 5, 6, 7, 8, 9])
    keep = fashion_mnist.balanced_subset(labels, 10)
    assert keep.tolist() == [0, 1, 3, 5, 10, 11, 12, 13, 14, 15]
    with pytest.raises(ValueError, match="train_subset must be a multiple of 10"):
        fashion_mnist.balanced_subset(labels, 15)


def test_train_subset_through_the_builder(tmp_path):
    written = stand_in(tmp_path / "data", gz=True)
    train, test = fashion_mnist.build(tmp_path / "data", verify=False, train_subset=20,
                                      cache_dir=str(tmp_path / "c"), test_subset=10)
    labels = written["train"][1]
    assert len(train) == 20 and len(test) == 10
    assert torch.bincount(test.labels, minlength=10).tolist() == [1] * 10
    assert torch.bincount(train.labels, minlength=10).tolist() == [2] * 10
    keep = fashion_mnist.balanced_subset(labels, 20)
    assert torch.equal(train.images, written["train"][0][keep])


needs_real = pytest.mark.skipif(
    not (REAL / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed in {REAL} (apt-get install dataset-fashion-mnist)")


@needs_real
def test_real_files(tmp_path):
    train, test = fashion_mnist.build(cache_dir=str(tmp_path / "cache"))
    assert (len(train), len(test)) == (60000, 10000)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert train.classes[9] == "Ankle boot" and train[0][1] == 9  # the first training image
    lines = check_dataset("fashion-mnist", None)
    assert lines[0] == f"Fashion-MNIST read from {REAL} (gzipped idx files)"
    assert lines[1] == "60000 train / 10000 test images, 10 classes"


def test_csnn_is_spikingjellys_example_network():
    """Same parameters, same order and shapes as the example's CSNN; with its IF/ATan neurons
    and copied weights, our logits equal the input of the example's last neuron."""
    from spikingjelly.activation_based import functional
    from spikingjelly.activation_based.examples.conv_fashion_mnist import CSNN as ExampleCSNN

    from sj_distill import models

    T, width = 3, 8
    theirs = ExampleCSNN(T=T, channels=width)
    ours = models.create_model("csnn", num_classes=10, in_chans=1, width=width, kind="if",
                               surrogate_fn="atan", alpha=2.0, reset="hard", detach_reset=False)
    their_params = list(theirs.state_dict().items())
    our_params = list(ours.state_dict().items())
    assert [v.shape for _, v in their_params] == [v.shape for _, v in our_params]
    ours.load_state_dict({k: v for (k, _), (_, v) in zip(our_params, their_params)})
    ours.eval(), theirs.eval()
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad():
        x_seq = x.unsqueeze(0).repeat(T, 1, 1, 1, 1)
        expected = theirs.conv_fc[:-1](x_seq)
        got = ours(x_seq)
    functional.reset_net(theirs), functional.reset_net(ours)
    assert got.shape == (T, 5, 10)
    assert torch.equal(got, expected)
    assert ours.feature_info == [dict(module="layer1", num_chs=width, reduction=2),
                                 dict(module="layer2", num_chs=width, reduction=4)]


def test_csnn_refuses_a_static_batch():
    from sj_distill import models

    model = models.create_model("csnn", in_chans=1, width=4)
    with pytest.raises(ValueError, match=r"csnn takes \[T, B, C, H, W\] \(repeat a static image "
                                         r"T times\), got shape \(2, 1, 28, 28\)"):
        model(torch.rand(2, 1, 28, 28))


#: Lowest test top-1 (on the recipes' fixed 5,000 test images) after one epoch on the fixed
#: 10,000-image training subset; measured (see docs/results.md, "CI check") with a margin.
ONE_EPOCH_FLOOR = 75.0


@pytest.mark.slow
@needs_real
def test_fmnist_rate_and_bptt_learn_real_data_alike(tmp_path):
    """One epoch of fmnist-rate and fmnist-bptt on the 10k subset: both clearly learn, and
    rate-based backprop lands within 3 points of BPTT."""
    from sj_distill.api import run_recipe

    top1 = {}
    for name in ("fmnist-rate", "fmnist-bptt"):
        summary = run_recipe(name, tmp_path / name, overrides=[
            "train.epochs=1", "data.options.train_subset=10000", "seed=0"])
        top1[name] = summary["top1"]
    print(f"one epoch on 10k Fashion-MNIST images: {top1}")
    assert min(top1.values()) > ONE_EPOCH_FLOOR, top1
    assert abs(top1["fmnist-rate"] - top1["fmnist-bptt"]) < 3.0, top1
