"""The on-disk formats, from small files written here, including broken ones."""

import gzip
import io
import pickle
import struct
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from keras_tie.data import CorruptDataError, DatasetNotFoundError, load
from keras_tie.data.idx import read_idx


def write_idx(path, array, compress=None, type_code=0x08):
    """Writes `array` as an IDX file (gzipped when the name ends in .gz)."""
    array = np.asarray(array)
    dtype = {0x08: ">u1", 0x0C: ">i4"}[type_code]
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(dtype).tobytes()
    compress = str(path).endswith(".gz") if compress is None else compress
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_mnist_like(folder, images, labels, split="train", prefix=""):
    folder.mkdir(parents=True, exist_ok=True)
    stem = {"train": "train", "test": "t10k"}[split] if not prefix else f"{prefix}{split}"
    write_idx(folder / f"{stem}-images-idx3-ubyte.gz", images)
    write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", labels)


def png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(buffer, format="PNG")
    return buffer.getvalue()


def add_bytes(archive, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def colour_image(value, size=8, channels=3):
    return np.full((size, size, channels), value, dtype=np.uint8)


# --- IDX ------------------------------------------------------------------------


@pytest.mark.parametrize("filename", ["x-idx3-ubyte.gz", "x-idx3-ubyte"])
def test_idx_round_trip_gzipped_and_plain(tmp_path, filename):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / filename, array)), array)


def test_idx_reads_big_endian_int32(tmp_path):
    array = np.array([1, -2, 70000], dtype=np.int32)
    result = read_idx(write_idx(tmp_path / "x.idx", array, type_code=0x0C))
    np.testing.assert_array_equal(result, array)


def test_idx_wrong_magic_names_the_file(tmp_path):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(b"\x08\x03\x00\x00" + b"\x00" * 20)
    with pytest.raises(CorruptDataError, match="bad-idx1-ubyte is not an IDX file.*magic='08 03 00 00'"):
        read_idx(path)


def test_idx_header_size_mismatch(tmp_path):
    path = tmp_path / "short.gz"
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 3, 2, 2)
    path.write_bytes(gzip.compress(header + bytes(8)))  # 2 of the 3 declared 2x2 images
    with pytest.raises(CorruptDataError, match=r"short.gz.*shape \(3, 2, 2\) \(12 bytes.*but 8 bytes follow"):
        read_idx(path)


def test_truncated_gzip_of_a_real_file(tmp_path, shared_data_dir):
    data = (shared_data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes()
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptDataError, match="t10k-labels-idx1-ubyte.gz is a truncated or damaged gzip"):
        read_idx(path)


def test_mnist_labels_out_of_range(tmp_path):
    write_mnist_like(tmp_path / "mnist", np.zeros((3, 28, 28)), [0, 10, 1])
    with pytest.raises(CorruptDataError, match=r"train-labels-idx1-ubyte.gz.*0\.\.9.*label=10"):
        load("mnist", data_dir=tmp_path, cache_dir=tmp_path / "cache")


def test_image_and_label_count_mismatch(tmp_path):
    write_mnist_like(tmp_path / "mnist", np.zeros((3, 28, 28)), [0, 1], split="test")
    with pytest.raises(CorruptDataError, match=r"t10k-images-idx3-ubyte.gz holds 3 images but .*2 labels"):
        load("mnist", split="test", data_dir=tmp_path, cache_dir=tmp_path / "cache")


def test_emnist_letters_are_transposed_and_relabelled(tmp_path):
    image = np.zeros((28, 28), dtype=np.uint8)
    image[0, 5] = 255  # stored transposed: appears at row 5, column 0
    folder = tmp_path / "emnist_letters"
    write_mnist_like(folder, np.stack([image, image]), [1, 26], "test", "emnist-letters-")
    ds = load("emnist_letters", split="test", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert ds.images[0, 5, 0, 0] == 255 and ds.images[0, 0, 5, 0] == 0
    np.testing.assert_array_equal(ds.labels, [0, 25])
    assert ds.info.class_names[0] == "A" and ds.info.num_classes == 26


def test_idx_user_folder(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    train_images = np.arange(4 * 5 * 6, dtype=np.uint8).reshape(4, 5, 6)
    write_idx(folder / "my-train-images-idx3-ubyte", train_images)
    write_idx(folder / "my-train-labels-idx1-ubyte", [0, 1, 1, 0])
    write_idx(folder / "my-test-images-idx3-ubyte.gz", train_images[:2])
    write_idx(folder / "my-test-labels-idx1-ubyte.gz", [2, 0])
    train = load(f"idx:{folder}", split="train", cache_dir=tmp_path / "cache")
    test = load(f"idx:{folder}", split="test", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(train.images[..., 0], train_images)
    assert train.info.class_names == ("0", "1", "2") == test.info.class_names
    np.testing.assert_array_equal(test.labels, [2, 0])
    assert train.info.name == f"idx:{folder}"


def test_idx_user_folder_without_test_files(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte", np.zeros((1, 2, 2)))
    write_idx(folder / "train-labels-idx1-ubyte", [0])
    with pytest.raises(DatasetNotFoundError, match="no test IDX pair.*'t10k or test'"):
        load(f"idx:{folder}", split="test", cache_dir=tmp_path / "cache")


# --- class folders and archives ---------------------------------------------------


def make_split_tar(path, classes=("cat", "dog", "emu"), per_class=2):
    """A tar.gz of wrapper/train/<class>/*.png and wrapper/test/<class>/*.png; pixel = a code."""
    with tarfile.open(path, "w:gz") as archive:
        for split_index, split in enumerate(("train", "test")):
            for label, cls in enumerate(classes):
                for i in range(per_class):
                    code = 100 * split_index + 10 * label + i
                    add_bytes(archive, f"wrapper/{split}/{cls}/img{i}.png", png_bytes(colour_image(code)))
    return path


def test_folder_archive_with_its_own_split(tmp_path):
    path = make_split_tar(tmp_path / "animals.tar.gz")
    train = load(f"folder:{path}", split="train", cache_dir=tmp_path / "cache")
    test = load(f"folder:{path}", split="test", cache_dir=tmp_path / "cache")
    assert train.info.class_names == ("cat", "dog", "emu")
    assert train.images.shape == (6, 8, 8, 3) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.labels, [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(train.images[:, 0, 0, 0], [0, 1, 10, 11, 20, 21])
    np.testing.assert_array_equal(test.images[:, 0, 0, 0], [100, 101, 110, 111, 120, 121])
    assert train.info.source == str(path)


def test_folder_without_splits_is_split_80_20_per_class(tmp_path):
    root = tmp_path / "shapes"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(colour_image(i, channels=1)[..., 0]).save(root / cls / f"{i:02d}.png")
    train = load(f"folder:{root}", split="train", cache_dir=tmp_path / "cache")
    test = load(f"folder:{root}", split="test", cache_dir=tmp_path / "cache")
    assert train.info.image_shape == (8, 8, 1)
    np.testing.assert_array_equal(np.bincount(test.labels), [2, 2])
    np.testing.assert_array_equal(np.bincount(train.labels), [8, 8])
    # Each (class, pixel code) pair is one file: train and test are disjoint and cover all 20.
    def keys(ds):
        return {(int(label), int(image[0, 0, 0])) for image, label in zip(ds.images, ds.labels)}

    assert not keys(train) & keys(test)
    assert len(keys(train) | keys(test)) == 20


def test_folder_zip_mixing_gray_and_rgb_becomes_rgb(tmp_path):
    path = tmp_path / "mixed.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x/train/a/0.png", png_bytes(colour_image(7, channels=1)))
        archive.writestr("x/train/b/0.png", png_bytes(colour_image(9, channels=3)))
        archive.writestr("x/test/a/0.png", png_bytes(colour_image(5, channels=1)))
        archive.writestr("__MACOSX/x/train/a/._0.png", b"resource fork, not an image")
    train = load(f"folder:{path}", split="train", cache_dir=tmp_path / "cache")
    assert train.images.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(train.images[0, 0, 0], [7, 7, 7])


def test_folder_images_of_different_sizes(tmp_path):
    root = tmp_path / "sizes"
    (root / "a").mkdir(parents=True)
    Image.fromarray(colour_image(1)).save(root / "a" / "small.png")
    Image.fromarray(colour_image(1, size=9)).save(root / "a" / "large.png")
    with pytest.raises(CorruptDataError, match="same size.*9x9.*8x8"):
        load(f"folder:{root}", cache_dir=tmp_path / "cache")


def test_corrupt_tar_names_the_archive(tmp_path):
    path = make_split_tar(tmp_path / "animals.tar.gz", per_class=20)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptDataError, match="animals.tar.gz is not a readable tar archive"):
        load(f"folder:{path}", cache_dir=tmp_path / "cache")
    path.write_bytes(b"this is not a tar archive at all" * 10)
    with pytest.raises(CorruptDataError, match="animals.tar.gz is not a readable tar archive"):
        load(f"folder:{path}", cache_dir=tmp_path / "cache")


def test_corrupt_zip_names_the_archive(tmp_path):
    path = tmp_path / "broken.zip"
    path.write_bytes(b"PK\x03\x04 garbage")
    with pytest.raises(CorruptDataError, match="broken.zip is not a readable zip archive"):
        load(f"folder:{path}", cache_dir=tmp_path / "cache")


def test_missing_user_folder(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="nowhere: not found"):
        load(f"folder:{tmp_path / 'nowhere'}", cache_dir=tmp_path / "cache")


def test_unreadable_image_in_a_user_folder_is_an_error(tmp_path):
    root = tmp_path / "pics"
    (root / "a").mkdir(parents=True)
    (root / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(CorruptDataError, match="broken.png: cannot decode"):
        load(f"folder:{root}", cache_dir=tmp_path / "cache")


def test_cifar10_png_folders_with_a_wrong_class(tmp_path):
    root = tmp_path / "cifar10"
    for split in ("train", "test"):
        (root / split / "airplane").mkdir(parents=True)
        (root / split / "zebra").mkdir(parents=True)
        Image.fromarray(colour_image(1, size=32)).save(root / split / "airplane" / "0.png")
        Image.fromarray(colour_image(1, size=32)).save(root / split / "zebra" / "0.png")
    with pytest.raises(CorruptDataError, match=r"unexpected class folder\(s\) \['zebra'\]"):
        load("cifar10", data_dir=tmp_path, cache_dir=tmp_path / "cache")


# --- CIFAR python, SVHN, and the image layouts -----------------------------------


def test_cifar10_python_tarball(tmp_path):
    rng = np.random.default_rng(0)
    rows = {name: rng.integers(0, 256, (2, 3072), dtype=np.uint8) for name in ("train", "test")}
    path = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as archive:
        for i in range(1, 6):
            batch = {b"data": rows["train"], b"labels": [i % 10, (i + 1) % 10]}
            add_bytes(archive, f"cifar-10-batches-py/data_batch_{i}", pickle.dumps(batch, protocol=2))
        test_batch = pickle.dumps({b"data": rows["test"], b"labels": [3, 9]})
        add_bytes(archive, "cifar-10-batches-py/test_batch", test_batch)
    train = load("cifar10", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    test = load("cifar10", split="test", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert train.images.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(test.labels, [3, 9])
    # Row layout: 1024 red, then 1024 green, then 1024 blue values.
    assert test.images[1, 0, 1, 0] == rows["test"][1, 1]
    assert test.images[1, 2, 3, 1] == rows["test"][1, 1024 + 2 * 32 + 3]
    assert test.images[1, 31, 31, 2] == rows["test"][1, 3071]


def test_cifar_pickle_with_foreign_objects_is_refused(tmp_path):
    path = tmp_path / "cifar10" / "cifar-10-batches-py"
    path.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (path / name).write_bytes(pickle.dumps({b"data": tmp_path, b"labels": [0]}))
    with pytest.raises(CorruptDataError, match="data_batch_1 is not a CIFAR batch"):
        load("cifar10", data_dir=tmp_path, cache_dir=tmp_path / "cache")


def test_svhn_mat_maps_label_10_to_digit_0(tmp_path):
    import scipy.io

    images = np.random.default_rng(1).integers(0, 256, (32, 32, 3, 3), dtype=np.uint8)
    (tmp_path / "svhn_cropped").mkdir()
    labels = np.array([[10], [1], [9]])
    scipy.io.savemat(tmp_path / "svhn_cropped" / "test_32x32.mat", {"X": images, "y": labels})
    ds = load("svhn_cropped", split="test", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(ds.labels, [0, 1, 9])
    np.testing.assert_array_equal(ds.images[2], images[..., 2])


def test_notmnist_skips_and_reports_unreadable_files(tmp_path):
    root = tmp_path / "notmnist" / "notMNIST_small"
    for letter in "AB":
        (root / letter).mkdir(parents=True)
        for i in range(5):
            Image.fromarray(colour_image(i, size=28, channels=1)[..., 0]).save(root / letter / f"{i}.png")
    (root / "A" / "broken.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        train = load("notmnist", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    test = load("notmnist", split="test", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert train.skipped == ("A/broken.png",) and test.skipped == ("A/broken.png",)
    assert len(train) + len(test) == 10
    assert train.info.class_names[:2] == ("A", "B") and train.info.image_shape == (28, 28, 1)


def test_tiny_imagenet_zip(tmp_path):
    path = tmp_path / "tiny_imagenet" / "tiny-imagenet-200.zip"
    path.parent.mkdir()
    wnids = ("n02", "n01")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("tiny-imagenet-200/wnids.txt", "\n".join(wnids))
        for k, wnid in enumerate(wnids):
            image = png_bytes(colour_image(k, 64))
            archive.writestr(f"tiny-imagenet-200/train/{wnid}/images/{wnid}_0.JPEG", image)
            archive.writestr(f"tiny-imagenet-200/train/{wnid}/{wnid}_boxes.txt", "ignored")
        gray = png_bytes(colour_image(5, 64, channels=1))
        archive.writestr("tiny-imagenet-200/val/images/val_0.JPEG", gray)
        archive.writestr("tiny-imagenet-200/val/images/val_1.JPEG", png_bytes(colour_image(6, 64)))
        annotations = "val_0.JPEG\tn02\t0\t0\t9\t9\nval_1.JPEG\tn01\t0\t0\t9\t9\n"
        archive.writestr("tiny-imagenet-200/val/val_annotations.txt", annotations)
        archive.writestr("tiny-imagenet-200/test/images/test_0.JPEG", png_bytes(colour_image(7, 64)))
    train = load("tiny_imagenet", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    test = load("tiny_imagenet", split="test", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert train.info.class_names == ("n01", "n02")
    np.testing.assert_array_equal(train.labels, [0, 1])
    np.testing.assert_array_equal(train.images[:, 0, 0, 0], [1, 0])
    np.testing.assert_array_equal(test.labels, [1, 0])
    assert test.images.shape == (2, 64, 64, 3)


def test_dtd_uses_official_split_1_and_resizes(tmp_path):
    path = tmp_path / "dtd" / "dtd-r1.0.1.tar.gz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as archive:
        for cls in ("banded", "zigzagged"):
            for i in range(3):
                image = np.zeros((48, 64, 3), dtype=np.uint8)
                image[:, 8:56] = 200  # the centred 48x48 square, the rest is cropped away
                add_bytes(archive, f"dtd/images/{cls}/{cls}_{i}.jpg", png_bytes(image))
        add_bytes(archive, "dtd/labels/train1.txt", b"banded/banded_0.jpg\nzigzagged/zigzagged_0.jpg\n")
        add_bytes(archive, "dtd/labels/val1.txt", b"banded/banded_1.jpg\n")
        add_bytes(archive, "dtd/labels/test1.txt", b"banded/banded_2.jpg\nzigzagged/zigzagged_2.jpg\n")
    train = load("dtd", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    test = load("dtd", split="test", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert train.images.shape == (3, 32, 32, 3) and test.images.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(train.labels, [0, 0, 1])
    assert np.all(train.images == 200)
    assert train.info.class_names == ("banded", "zigzagged")


def test_omniglot_alphabets_are_the_classes(tmp_path):
    for stem, alphabets in (("images_background", ("Latin", "Greek")), ("images_evaluation", ("Atlantean",))):
        for alphabet in alphabets:
            for character in ("character01", "character02"):
                folder = tmp_path / "omniglot" / stem / alphabet / character
                folder.mkdir(parents=True)
                Image.fromarray(np.ones((105, 105), dtype=bool)).save(folder / "0.png")
    train = load("omniglot", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    test = load("omniglot", split="test", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert train.info.class_names == ("Greek", "Latin")
    np.testing.assert_array_equal(train.labels, [0, 0, 1, 1])
    assert train.images.shape == (4, 105, 105, 1) and int(train.images.max()) == 255
    assert test.info.class_names == ("Atlantean",) and len(test) == 2
