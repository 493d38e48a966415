"""Tests for nas.data: loaders, the search split and the on-device BatchLoader (CPU, offline)."""

from __future__ import annotations

import gzip
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nas.data import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    BatchLoader,
    ImageTensors,
    cutout,
    load_dataset,
    random_crop_flip,
    read_idx,
    search_split,
)
from nas.errors import ConfigError, DataError

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def make_tensors(n: int = 40, c: int = 3, h: int = 12, w: int = 10, k: int = 4,
                 seed: int = 0) -> ImageTensors:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % k
    return ImageTensors(images, labels, k, "toy", (0.5,) * c, (0.25,) * c)


def unnormalize(x: torch.Tensor, data: ImageTensors) -> torch.Tensor:
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return ((x * std + mean) * 255).round().to(torch.uint8)


# --------------------------------------------------------------------------- loaders


def test_embedded_sample_loads_balanced():
    train = load_dataset("fashion_mnist_sample")
    test = load_dataset("fashion_mnist_sample", split="test")
    assert train.images.shape == (2000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (1000, 1, 28, 28)
    assert train.labels.dtype == torch.int64 and train.shape == (1, 28, 28)
    assert train.num_classes == 10 and len(train.classes) == 10
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    assert torch.bincount(train.labels).tolist() == [200] * 10
    assert torch.bincount(test.labels).tolist() == [100] * 10
    assert test.mean == train.mean and test.std == train.std  # train statistics for both
    assert abs(train.mean[0] - FASHION_MNIST_MEAN[0]) < 0.02


def write_npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return str(path)


def test_npz_grey_nhw(tmp_path, caplog):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 9, 7), dtype=np.uint8)
    y = np.arange(30) % 3
    path = write_npz(tmp_path / "grey.npz", x=x, y=y)
    with caplog.at_level(logging.INFO, logger="nas.data"):
        d = load_dataset(f"npz:{path}")
    assert d.images.shape == (30, 1, 9, 7) and d.num_classes == 3 and d.classes is None
    assert torch.equal(d.images[:, 0], torch.from_numpy(x))
    assert abs(d.mean[0] - x.mean() / 255) < 1e-6 and abs(d.std[0] - x.std() / 255) < 1e-6
    assert "1 channel" in caplog.text and "3 classes" in caplog.text


def test_npz_colour_nhwc_with_test_split(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (24, 8, 6, 3), dtype=np.uint8)
    xt = rng.integers(0, 256, (5, 8, 6, 3), dtype=np.uint8)
    path = write_npz(tmp_path / "rgb.npz", x=x, y=np.arange(24) % 4, x_test=xt,
                     y_test=np.array([0, 1, 2, 3, 5]), classes=np.array(list("abcdef")))
    train = load_dataset(path)  # a bare path ending in .npz works too
    test = load_dataset(path, split="test")
    assert train.shape == (3, 8, 6) and test.images.shape == (5, 3, 8, 6)
    assert train.num_classes == 6 and train.classes == tuple("abcdef")
    assert torch.equal(test.images, torch.from_numpy(xt).permute(0, 3, 1, 2))
    assert test.mean == train.mean


def test_npz_missing_keys(tmp_path):
    x = np.zeros((4, 5, 5), np.uint8)
    path = write_npz(tmp_path / "nolabels.npz", x=x)
    with pytest.raises(DataError, match="'y'"):
        load_dataset(f"npz:{path}")
    path = write_npz(tmp_path / "notest.npz", x=x, y=np.zeros(4, np.int64))
    with pytest.raises(DataError, match="'x_test'.*split=test"):
        load_dataset(f"npz:{path}", split="test")
    with pytest.raises(DataError, match="not found"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")


def test_unknown_name_and_bad_arguments():
    with pytest.raises(ConfigError, match="valid: cifar10.*npz:PATH.*imagefolder:PATH"):
        load_dataset("mnist-ish")
    with pytest.raises(ConfigError, match="split"):
        load_dataset("synthetic", split="val")
    with pytest.raises(ConfigError, match="image_szie"):
        load_dataset("synthetic", image_szie=8)


def test_cifar10_missing_without_download(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", root=tmp_path, download=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert "data.root=PATH" in msg and "cifar-10-batches-py" in msg and "download" in msg


def save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_imagefolder(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        for cls in ("cat", "dog"):
            for i in range(n):
                save_png(tmp_path / split / cls / f"{i}.png",
                         rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    save_png(tmp_path / "train" / "dog" / "big.png", rng.integers(0, 256, (12, 10, 3), np.uint8))
    with pytest.raises(DataError, match="image_size"):
        load_dataset(f"imagefolder:{tmp_path}")
    train = load_dataset(f"imagefolder:{tmp_path}", image_size=8)
    assert train.images.shape == (7, 3, 8, 8) and train.classes == ("cat", "dog")
    assert torch.bincount(train.labels).tolist() == [3, 4]
    test = load_dataset(f"imagefolder:{tmp_path}", split="test", image_size=8)
    assert test.images.shape == (4, 3, 8, 8) and test.mean == train.mean
    # A single folder of class subfolders is a train-only dataset; grey stays 1 channel.
    single = tmp_path / "single"
    for i in range(2):
        save_png(single / "a" / f"{i}.png", np.full((5, 5), 10 * i, np.uint8))
    d = load_dataset(f"imagefolder:{single}")
    assert d.images.shape == (2, 1, 5, 5) and d.num_classes == 1
    with pytest.raises(DataError, match="test/"):
        load_dataset(f"imagefolder:{single}", split="test")


def test_imagefolder_on_a_tree_that_is_not_a_dataset_fails_fast():
    """/proc/self links to the whole file system: the old full walk ran for minutes."""
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        load_dataset("imagefolder:/proc/self")
    assert time.perf_counter() - start < 2.0
    msg = str(err.value)
    assert "\n" not in msg and "/proc/self" in msg and "PATH/<class>/<image files>" in msg


def test_imagefolder_without_images_names_what_was_expected(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"no class folders in .*flat \(1 files, e\.g\. notes"):
        load_dataset(f"imagefolder:{flat}")
    texts = tmp_path / "texts"
    (texts / "cat").mkdir(parents=True)
    (texts / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError) as err:
        load_dataset(f"imagefolder:{texts}")
    msg = str(err.value)
    assert "\n" not in msg and f"class folder {texts / 'cat'} has no image files" in msg
    # one class of images beside one of text files: the second one is named
    save_png(texts / "ant" / "0.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="class folder .*cat has no image files"):
        load_dataset(f"imagefolder:{texts}")


def test_imagefolder_accepts_images_a_level_down_and_shows_a_bar_on_large_trees(
        tmp_path, monkeypatch, capsys):
    """The walk recurses, so class/<sub>/image.png stays a valid layout."""
    import nas.data.imagefolder

    for cls in ("a", "b"):
        for i in range(2):
            save_png(tmp_path / cls / "sub" / f"{i}.png", np.full((4, 4), 50 * i, np.uint8))
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(nas.data.imagefolder, "_BAR_MIN_FILES", 2)
    d = load_dataset(f"imagefolder:{tmp_path}")
    assert d.images.shape == (4, 1, 4, 4) and d.classes == ("a", "b")
    assert "decoding" in capsys.readouterr().err
    monkeypatch.setenv("TQDM_DISABLE", "1")  # nas -q
    load_dataset(f"imagefolder:{tmp_path}")
    assert "decoding" not in capsys.readouterr().err


def test_synthetic_deterministic_and_learnable():
    a = load_dataset("synthetic", num_samples=200, num_classes=5, image_size=8, channels=2, seed=3)
    b = load_dataset("synthetic", num_samples=200, num_classes=5, image_size=8, channels=2, seed=3)
    c = load_dataset("synthetic", num_samples=200, num_classes=5, image_size=8, channels=2, seed=4)
    assert a.images.shape == (200, 2, 8, 8) and a.num_classes == 5
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    test = load_dataset("synthetic", split="test", num_samples=100, num_classes=5, image_size=8,
                        channels=2, seed=3)
    assert not torch.equal(test.images[:10], a.images[:10])
    # Learnable: a nearest-class-mean classifier fit on train does well on test.
    xa = a.images.flatten(1).float()
    centres = torch.stack([xa[a.labels == k].mean(0) for k in range(5)])
    pred = torch.cdist(test.images.flatten(1).float(), centres).argmin(1)
    assert (pred == test.labels).float().mean() > 0.9


def test_idx_reader_and_fashion_fallback(tmp_path):
    x = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    y = np.array([0, 9, 4], np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", x, True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", y, False)  # uncompressed works too
    assert np.array_equal(read_idx(tmp_path / "t10k-images-idx3-ubyte.gz"), x)
    d = load_dataset("fashion_mnist", split="test", root=tmp_path / "none", download=False,
                     debian_dir=tmp_path)
    assert d.images.shape == (3, 1, 28, 28) and d.labels.tolist() == [0, 9, 4]
    with pytest.raises(DataError) as info:
        load_dataset("fashion_mnist", root=tmp_path / "none", download=False,
                     debian_dir=tmp_path)
    assert "\n" not in str(info.value) and "data.root=PATH" in str(info.value)
    (tmp_path / "bad.idx").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05ab")
    with pytest.raises(DataError, match="bad.idx"):
        read_idx(tmp_path / "bad.idx")


def test_cifar_converts_data_array_without_pil(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)

    class FakeCIFAR10:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            self.data, self.targets = hwc, [0, 1, 2, 3, 4, 9]
            self.classes = [f"c{i}" for i in range(10)]

    monkeypatch.setattr(tvd, "CIFAR10", FakeCIFAR10)
    (tmp_path / "cifar-10-batches-py").mkdir()
    d = load_dataset("cifar10", root=tmp_path, download=False)
    assert d.images.shape == (6, 3, 32, 32) and d.num_classes == 10
    assert torch.equal(d.images, torch.from_numpy(hwc).permute(0, 3, 1, 2))
    assert d.labels.dtype == torch.int64 and d.mean[0] == pytest.approx(0.4914, abs=1e-4)


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    data = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    data += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def test_fashion_mnist_torchvision_root_first(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 4), ("t10k", 2)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", np.full((n, 28, 28), 7), False)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n), False)
    d = load_dataset("fashion_mnist", root=tmp_path, download=False)
    assert d.images.shape == (4, 1, 28, 28) and d.labels.tolist() == [0, 1, 2, 3]
    assert d.classes[0] == "T-shirt/top" and d.num_classes == 10


@pytest.mark.skipif(not DEBIAN.is_dir(), reason="Debian dataset-fashion-mnist not installed")
def test_debian_fashion_mnist(tmp_path):
    train = load_dataset("fashion_mnist", root=tmp_path, download=False)
    test = load_dataset("fashion_mnist", split="test", root=tmp_path, download=False)
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == torch.uint8
    assert test.images.shape == (10000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.bincount(test.labels).tolist() == [1000] * 10
    assert train.mean == FASHION_MNIST_MEAN and train.std == FASHION_MNIST_STD
    px = train.images[::7].double() / 255  # the hard-coded statistics match the data
    assert abs(px.mean().item() - FASHION_MNIST_MEAN[0]) < 2e-3
    assert abs(px.std().item() - FASHION_MNIST_STD[0]) < 2e-3


# --------------------------------------------------------------------------- container/split


def test_image_tensors_validation_and_methods():
    d = make_tensors()
    assert len(d) == 40 and d.shape == (3, 12, 10)
    sub = d.subset([3, 1])
    assert torch.equal(sub.images, d.images[[3, 1]]) and sub.labels.tolist() == [3, 1]
    assert d.subset(slice(0, 5)).images.shape[0] == 5
    assert d.subset(d.labels == 2).labels.tolist() == [2] * 10
    assert d.to("cpu").images.device.type == "cpu"
    with pytest.raises(DataError, match="uint8"):
        ImageTensors(d.images.float(), d.labels, 4, "x", d.mean, d.std)
    with pytest.raises(DataError, match="labels"):
        ImageTensors(d.images, d.labels[:3], 4, "x", d.mean, d.std)
    with pytest.raises(DataError, match="mean/std"):
        ImageTensors(d.images, d.labels, 4, "x", (0.5,), (0.2,))


def test_search_split():
    n = 101
    d = ImageTensors(torch.zeros(n, 1, 2, 2, dtype=torch.uint8), torch.arange(n), n, "ids",
                     (0.5,), (0.5,))
    a, b = search_split(d, portion=0.5, seed=1)
    ids_a, ids_b = set(a.labels.tolist()), set(b.labels.tolist())
    assert len(a) == 50 and len(b) == 51
    assert not ids_a & ids_b and ids_a | ids_b == set(range(n))
    a2, b2 = search_split(d, portion=0.5, seed=1)
    assert torch.equal(a.labels, a2.labels) and torch.equal(b.labels, b2.labels)
    assert not torch.equal(search_split(d, seed=2)[0].labels, a.labels)
    assert a.labels.tolist() != sorted(a.labels.tolist())  # shuffled, not the first half
    with pytest.raises(ConfigError):
        search_split(d, portion=1.0)


# --------------------------------------------------------------------------- BatchLoader


def collect(loader: BatchLoader) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def test_batchloader_shapes_normalisation_and_coverage():
    d = load_dataset("fashion_mnist_sample")
    loader = BatchLoader(d, 256, shuffle=True)
    assert len(loader) == 8
    x, y = next(iter(loader))
    assert x.shape == (256, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    xs, ys = collect(loader)
    assert xs.shape == (2000, 1, 28, 28)
    assert torch.equal(torch.bincount(ys), torch.bincount(d.labels))
    assert abs(xs.mean().item()) < 1e-3 and abs(xs.std().item() - 1) < 1e-2
    ordered = collect(BatchLoader(d, 300, shuffle=False))[0]
    assert torch.allclose(unnormalize(ordered, d).float(), d.images.float())


def test_batchloader_order_per_seed_and_epoch():
    d = make_tensors(n=64)

    def labels(loader: BatchLoader, epoch: int) -> list[int]:
        loader.set_epoch(epoch)
        return collect(loader)[1].tolist()

    a = BatchLoader(d, 8, augment=True, cutout=4, seed=5)
    b = BatchLoader(d, 8, augment=True, cutout=4, seed=5)
    assert labels(a, 3) == labels(b, 3)
    a.set_epoch(3)
    b.set_epoch(3)
    assert torch.equal(collect(a)[0], collect(b)[0])  # augmentation too, not only order
    assert labels(a, 0) != labels(a, 1)
    assert labels(a, 0) != labels(BatchLoader(d, 8, seed=6), 0)
    # Without set_epoch each pass advances the epoch; set_epoch replays one.
    c = BatchLoader(d, 8, seed=5)
    first, second = collect(c)[1].tolist(), collect(c)[1].tolist()
    assert first != second and c.epoch == 2
    assert labels(c, 1) == second


def test_random_crop_matches_manual_crop():
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (16, 3, 9, 7), generator=g, dtype=torch.uint8)
    out, oy, ox, flipped = random_crop_flip(imgs, 3, flip=True, generator=g)
    assert out.shape == imgs.shape and out.dtype == torch.uint8
    padded = F.pad(imgs, (3, 3, 3, 3))
    for i in range(16):
        ref = padded[i, :, oy[i]:oy[i] + 9, ox[i]:ox[i] + 7]
        ref = ref.flip(-1) if flipped[i] else ref
        assert torch.equal(out[i], ref)
    assert 0 < int(flipped.sum()) < 16 and int(oy.max()) <= 6 and int(ox.min()) >= 0
    assert len(set(zip(oy.tolist(), ox.tolist()))) > 1


def test_batchloader_crop_is_a_shift_of_padded_image():
    d = make_tensors(n=32, c=2, h=10, w=10)
    loader = BatchLoader(d, 32, shuffle=False, augment=True, crop_padding=2, flip=False)
    x, _ = next(iter(loader))
    got = unnormalize(x, d).float()  # 32×2×10×10
    padded = F.pad(d.images.float(), (2, 2, 2, 2))
    # All 25 crops of each padded image: 32×2×5×5×10×10.
    crops = padded.unfold(2, 10, 1).unfold(3, 10, 1)
    match = (crops == got[:, :, None, None]).all(-1).all(-1).all(1)  # 32×5×5
    assert match.any(-1).any(-1).all()
    assert not match[:, 2, 2].all()  # some really shifted


def test_flip():
    d = make_tensors(n=64)
    x, _ = next(iter(BatchLoader(d, 64, shuffle=False, augment=True, crop_padding=0)))
    ref = collect(BatchLoader(d, 64, shuffle=False))[0]
    same = (x == ref).flatten(1).all(1)
    mirrored = (x == ref.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()


def test_cutout_function_box():
    x = torch.ones(200, 2, 12, 12)
    out, cy, cx = cutout(x, 6, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, torch.ones_like(x))  # out of place
    for i in range(200):
        y1, y2 = max(int(cy[i]) - 3, 0), min(int(cy[i]) + 3, 12)
        x1, x2 = max(int(cx[i]) - 3, 0), min(int(cx[i]) + 3, 12)
        ref = torch.ones(2, 12, 12)
        ref[:, y1:y2, x1:x2] = 0
        assert torch.equal(out[i], ref)
    zeros = (out[:, 0] == 0).flatten(1).sum(1)
    assert zeros.max() == 36 and zeros.min() < 36  # full box inside, clipped at borders


def test_batchloader_cutout_zeroes_normalised_square():
    d = make_tensors(n=64, c=3, h=16, w=16)
    plain = collect(BatchLoader(d, 16, shuffle=False))[0]
    aug = collect(BatchLoader(d, 16, shuffle=False, augment=True, crop_padding=0, flip=False,
                              cutout=8))[0]
    changed = aug != plain
    assert (aug[changed] == 0).all()  # zero in normalised space (after Normalize)
    per_img = changed.all(1).flatten(1).sum(1)  # pixels zeroed in every channel
    assert per_img.max() == 64 and (per_img > 0).all()
    assert torch.equal(changed.any(1), changed.all(1))  # same box in all channels


def test_drop_last_and_channels_last():
    d = make_tensors(n=10)
    assert len(BatchLoader(d, 4)) == 3 and len(BatchLoader(d, 4, drop_last=True)) == 2
    sizes = [x.shape[0] for x, _ in BatchLoader(d, 4)]
    assert sizes == [4, 4, 2]
    assert [x.shape[0] for x, _ in BatchLoader(d, 4, drop_last=True)] == [4, 4]
    x, _ = next(iter(BatchLoader(d, 4, channels_last=True, augment=True, cutout=4)))
    assert x.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ConfigError):
        BatchLoader(d, 0)


def test_torchvision_reference_matches_without_augmentation():
    """The benchmarks' PIL pipeline (benchmarks/_pil_loader.py) is a fair reference."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from _pil_loader import torchvision_loader

    d = make_tensors(n=20, c=3, h=8, w=8)
    ref = torch.cat([x for x, _ in torchvision_loader(d, 8, shuffle=False, num_workers=0)])
    ours = collect(BatchLoader(d, 8, shuffle=False))[0]
    assert torch.allclose(ref, ours, atol=1e-5)
    grey = make_tensors(n=6, c=1, h=8, w=8)
    x, y = next(iter(torchvision_loader(grey, 6, augment=True, cutout=4, num_workers=0)))
    assert x.shape == (6, 1, 8, 8) and y.dtype == torch.int64


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_batchloader_on_cuda():
    d = load_dataset("fashion_mnist_sample")
    loader = BatchLoader(d, 128, augment=True, cutout=8, device="cuda", seed=1)
    assert loader.images.is_cuda and loader.images.dtype == torch.uint8
    x, y = next(iter(loader))
    assert x.is_cuda and y.is_cuda and x.shape == (128, 1, 28, 28)
    loader.set_epoch(4)
    a = collect(loader)[0]
    loader.set_epoch(4)
    assert torch.equal(a, collect(loader)[0])
