"""Dataset loaders: every format on a tiny file written in its exact real format, the
parse-once cache, one-line DataErrors, and (when ../shared/data is present) the real files."""

from __future__ import annotations

import gzip
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from fl_sim.data import (
    Dataset,
    cache_dir,
    cached_arrays,
    dataset_names,
    dataset_status,
    default_data_root,
    load_dataset,
)
from fl_sim.data.images import NORMALIZATION
from fl_sim.errors import DataError
from tests.data_formats import (
    CIFAR10_CLASSES,
    idx_bytes,
    make_tgz,
    truncate,
    vouch_for,
    write_cifar10,
    write_cifar100,
    write_fmnist,
    write_image_tree,
    write_location,
    write_purchase,
    write_texas,
)

SHARED = Path(os.environ.get("FL_SIM_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("FL_SIM_CACHE", str(d))
    return d


@pytest.fixture
def root(tmp_path, cache) -> Path:
    r = tmp_path / "data"
    r.mkdir()
    return r


def norm(u8: np.ndarray, stats: str) -> np.ndarray:
    mean, std = NORMALIZATION[stats]
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return (u8.astype(np.float32) / 255.0 - m) / s


def check(ds: Dataset, name: str, n: int, shape: tuple, k: int) -> None:
    assert ds.name == name and len(ds) == n
    assert ds.x.dtype == np.float32 and ds.x.shape == (n, *shape)
    assert ds.y.dtype == np.int64 and ds.y.shape == (n,)
    assert ds.input_shape == shape and ds.num_classes == k
    assert 0 <= ds.y.min() and ds.y.max() < k


def one_line_error(exc: pytest.ExceptionInfo, *parts: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    for p in parts:
        assert p in msg, (p, msg)
    return msg


# ---------------------------------------------------------------------------------------
# tabular


def test_digits_needs_no_files(cache):
    ds = load_dataset("digits", root="/nonexistent")
    check(ds, "digits", 1797, (64,), 10)
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    assert len(load_dataset("digits", subset=100)) == 100


@pytest.mark.parametrize("tgz", [True, False])
def test_location30_both_layouts(root, tgz):
    path, x, y = write_location(root, n=40, tgz=tgz)
    ds = load_dataset("location30", root)
    check(ds, "location30", 40, (446,), 30)
    assert isinstance(ds.x, np.memmap)
    np.testing.assert_array_equal(ds.x, x.astype(np.float32))
    np.testing.assert_array_equal(ds.y, y)  # quoted "1".."30" → 0..29
    assert ds.display_name == "Location-30"
    sub = load_dataset("location30", root, subset=7)
    np.testing.assert_array_equal(sub.y, y[:7])
    # clients re-open arrays by file name: the file must hold exactly this subset
    assert np.load(sub.x.filename, mmap_mode="r").shape == (7, 446)
    assert np.load(sub.y.filename, mmap_mode="r").tolist() == y[:7].tolist()


@pytest.mark.parametrize("tgz", [False, True])
def test_purchase100_both_layouts(root, tgz):
    _, x, y = write_purchase(root, n=120, tgz=tgz)
    ds = load_dataset("purchase100", root)
    check(ds, "purchase100", 120, (600,), 100)
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(ds.y, y)
    assert set(np.unique(ds.x)) <= {0.0, 1.0}


@pytest.mark.parametrize("tgz", [False, True])
def test_texas100_both_layouts(root, tgz):
    _, x, y = write_texas(root, n=12, tgz=tgz)
    ds = load_dataset("texas100", root)
    check(ds, "texas100", 12, (6169,), 100)
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(ds.y, y)


def test_csv_with_spaces_and_crlf_still_parses(root):
    (root / "purchase100").mkdir()
    row = "5," + ",".join(["1", " 0"] * 300) + "\r\n"
    (root / "purchase100" / "dataset_purchase").write_text(row + "\r\n" + row)
    ds = load_dataset("purchase100", root)
    assert len(ds) == 2 and ds.y.tolist() == [4, 4] and ds.x[0, :4].tolist() == [1, 0, 1, 0]


@pytest.mark.parametrize(
    "bad_line, problem",
    [
        ("3," + ",".join(["1"] * 599), "599 feature values, expected 600"),  # row cut short
        ("3," + ",".join(["1"] * 598 + ["x", "0"]), "non-numeric"),
        ("101," + ",".join(["0"] * 600), "label 101 outside 1..100"),
        ("0," + ",".join(["0"] * 600), "label 0 outside 1..100"),
        ("a," + ",".join(["0"] * 600), "not an integer"),
        ("3," + ",".join(["2"] * 600), "not binary"),
        ("3", "has 1 value"),
    ],
)
def test_purchase100_malformed_rows(root, bad_line, problem):
    path, _, _ = write_purchase(root, n=5)
    with open(path, "a") as f:
        f.write(bad_line + "\n")
    with pytest.raises(DataError) as e:
        load_dataset("purchase100", root)
    one_line_error(e, "purchase100", problem, "line 6", str(path), "expected privacytrustlab")


def test_location30_truncated_tgz(root):
    path, _, _ = write_location(root, n=200, tgz=True)
    truncate(path, 0.5)
    with pytest.raises(DataError) as e:
        load_dataset("location30", root)
    one_line_error(e, "location30", "truncated", str(path), "bangkok")


def test_location30_garbage_tgz(root):
    (root / "location30").mkdir()
    (root / "location30" / "dataset_location.tgz").write_bytes(b"not a tarball at all")
    with pytest.raises(DataError) as e:
        load_dataset("location30", root)
    one_line_error(e, "location30", "dataset_location.tgz")


def test_location30_tgz_without_member(root):
    make_tgz(root / "location30" / "dataset_location.tgz", {"other": b"1,0\n"})
    with pytest.raises(DataError) as e:
        load_dataset("location30", root)
    one_line_error(e, "location30", "no member 'bangkok'")


def test_tgz_symlink_member_rejected(root):
    path = root / "location30" / "dataset_location.tgz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as tf:
        info = tarfile.TarInfo("bangkok")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(DataError) as e:
        load_dataset("location30", root)
    one_line_error(e, "location30", "link")


def test_texas100_row_count_mismatch(root):
    path, _, _ = write_texas(root, n=4)
    with open(path / "labels", "a") as f:
        f.write("7\n")
    with pytest.raises(DataError) as e:
        load_dataset("texas100", root)
    one_line_error(e, "texas100", "4 rows but labels has 5")


def test_missing_files_one_line_errors(root):
    for name, where in [
        ("location30", "location30/dataset_location.tgz"),
        ("purchase100", "purchase100/dataset_purchase"),
        ("texas100", "texas100/texas/100"),
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("cifar10_folder", "cifar10-jpg"),
        ("cifar100_folder", "cifar100-jpg"),
        ("fmnist", "FashionMNIST/raw"),
        ("fmnist100", "FashionMNIST/raw"),
    ]:
        with pytest.raises(DataError) as e:
            load_dataset(name, root)
        msg = one_line_error(e, f"{name}: file not found", str(root / where), "(expected ")
        assert "Traceback" not in msg


def test_unknown_name_and_option(root):
    with pytest.raises(DataError, match="unknown dataset 'nope'; known: digits"):
        load_dataset("nope", root)
    with pytest.raises(DataError, match="unknown option"):
        load_dataset("digits", root, subsett=3)
    with pytest.raises(DataError, match="subset must be"):
        load_dataset("digits", root, subset=0)
    with pytest.raises(DataError, match="subset=5000 exceeds the 1797"):
        load_dataset("digits", root, subset=5000)


# ---------------------------------------------------------------------------------------
# CIFAR through torchvision


@pytest.fixture
def vouch(tmp_path, monkeypatch):
    """Vouch for the (non-official) pickled files in a directory, as a user would:
    sha256sum's output in a file named by $FL_SIM_TRUSTED_SHA256."""
    def vouch_dir(directory: Path) -> None:
        monkeypatch.setenv("FL_SIM_TRUSTED_SHA256", str(vouch_for(directory, tmp_path / "trusted.sha256")))
    return vouch_dir


def test_cifar10_pickle_batches(root, vouch):
    imgs, labels = write_cifar10(root, per_batch=4)
    with pytest.raises(DataError) as e:  # our tiny files are not the official bytes
        load_dataset("cifar10", root)
    one_line_error(e, "cifar10", "not the official file", "FL_SIM_TRUSTED_SHA256")
    vouch(root / "cifar-10-batches-py")
    ds = load_dataset("cifar10", root)
    check(ds, "cifar10", 24, (3, 32, 32), 10)
    np.testing.assert_allclose(ds.x, norm(imgs, "cifar10"), atol=1e-6)
    np.testing.assert_array_equal(ds.y, labels)
    sub = load_dataset("cifar10", root, subset=5)
    np.testing.assert_array_equal(sub.y, labels[:5])


def test_cifar100_pickle_batches(root, vouch):
    imgs, labels = write_cifar100(root, n_train=10, n_test=5)
    vouch(root / "cifar-100-python")
    ds = load_dataset("cifar100", root)
    check(ds, "cifar100", 15, (3, 32, 32), 100)
    np.testing.assert_allclose(ds.x, norm(imgs, "cifar100"), atol=1e-6)
    np.testing.assert_array_equal(ds.y, labels)  # fine labels


def test_cifar10_truncated_batch(root, vouch):
    write_cifar10(root, per_batch=4)
    truncate(root / "cifar-10-batches-py" / "data_batch_3", 0.5)
    vouch(root / "cifar-10-batches-py")  # vouched for as it is now: the parse reports it
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", root)
    one_line_error(e, "cifar10", "truncated or malformed", "cifar-10-batches-py")


def test_cifar10_changed_after_vouching_is_not_read(root, vouch):
    write_cifar10(root, per_batch=4)
    vouch(root / "cifar-10-batches-py")
    truncate(root / "cifar-10-batches-py" / "data_batch_3", 0.5)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", root)
    one_line_error(e, "cifar10", "data_batch_3 is a pickle", "not the official file")


def test_cifar10_missing_one_batch(root):
    write_cifar10(root, per_batch=2)
    (root / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(DataError) as e:
        load_dataset("cifar10", root)
    one_line_error(e, "cifar10", "missing data_batch_5")


# ---------------------------------------------------------------------------------------
# image folders


def test_cifar10_folder_png_tree(root):
    _, imgs, labels = write_image_tree(root / "cifar10-jpg", CIFAR10_CLASSES, n_train=2, n_test=1)
    ds = load_dataset("cifar10_folder", root)
    check(ds, "cifar10_folder", 30, (3, 32, 32), 10)
    np.testing.assert_allclose(ds.x, norm(imgs, "cifar10"), atol=1e-6)  # PNG is lossless
    np.testing.assert_array_equal(ds.y, labels)
    assert ds.y[:2].tolist() == [0, 0]  # sorted class folders: airplane first


def test_cifar10_folder_tarball_unpacked_once_into_cache(root, cache, tmp_path):
    _, imgs, labels = write_image_tree(root / "cifar10-jpg.tar.gz", CIFAR10_CLASSES,
                                       n_train=3, n_test=1, ext="jpg", tgz=True)
    ds = load_dataset("cifar10_folder", root, subset=20)
    check(ds, "cifar10_folder", 20, (3, 32, 32), 10)
    assert np.bincount(ds.y).tolist() == [2] * 10  # balanced: first 2 of each class
    unpacked = [p for p in (cache / "unpacked").iterdir() if not p.name.startswith(".")]  # not locks
    assert len(unpacked) == 1 and (unpacked[0] / "train" / "bird").is_dir()
    assert not any(p.name in ("train", "test") for p in root.iterdir())  # nothing next to the tarball
    full = load_dataset("cifar10_folder", root)
    assert len(full) == 40 and len(list((cache / "unpacked").glob("cifar10_folder-*"))) == 1
    np.testing.assert_allclose(full.x, norm(imgs, "cifar10"), atol=1e-6)  # decoded JPEG pixels
    np.testing.assert_array_equal(full.y, labels)


def test_cifar100_folder_tree(root):
    classes = [f"c{i:03d}" for i in range(100)]
    write_image_tree(root / "cifar100-jpg", classes, n_train=1, n_test=0)
    ds = load_dataset("cifar100_folder", root)
    check(ds, "cifar100_folder", 100, (3, 32, 32), 100)
    assert ds.y.tolist() == list(range(100))


def test_image_folder_errors(root):
    write_image_tree(root / "cifar10-jpg", CIFAR10_CLASSES[:3])
    with pytest.raises(DataError) as e:
        load_dataset("cifar10_folder", root)
    one_line_error(e, "cifar10_folder", "3 class folders, expected 10")

    write_image_tree(root / "other", CIFAR10_CLASSES)
    bad = root / "other" / "train" / "cat" / "0000.png"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError) as e:
        load_dataset("cifar10_folder", root, path=root / "other")
    one_line_error(e, "cifar10_folder", "cannot decode image", str(bad))

    with pytest.raises(DataError) as e:
        load_dataset("cifar10_folder", root, path=root / "other", subset=100)
    one_line_error(e, "subset=100 exceeds")


def test_image_tarball_escaping_member_rejected(root, cache, tmp_path):
    members = {"train/cat/0000.png": b"x", "../../evil.txt": b"owned"}
    tgz = make_tgz(root / "cifar10-jpg.tar.gz", members)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10_folder", root)
    one_line_error(e, "cifar10_folder", "leaves", str(tgz))
    assert not (tmp_path / "evil.txt").exists() and not (cache / "evil.txt").exists()
    assert not (cache / "unpacked").exists() or not any(
        p.name.startswith("cifar10_folder-") for p in (cache / "unpacked").iterdir())


def test_image_tarball_truncated(root):
    write_image_tree(root / "cifar10-jpg.tar.gz", CIFAR10_CLASSES, n_train=4, tgz=True, ext="png")
    truncate(root / "cifar10-jpg.tar.gz", 0.6)
    with pytest.raises(DataError) as e:
        load_dataset("cifar10_folder", root)
    one_line_error(e, "cifar10_folder", "truncated", "cifar10-jpg.tar.gz")


# ---------------------------------------------------------------------------------------
# Fashion-MNIST idx files, and the Purchase100 construction on them


@pytest.mark.parametrize("gz", [True, False])
def test_fmnist_idx(root, gz):
    _, imgs, labels = write_fmnist(root, n_train=30, n_test=10, gz=gz)
    ds = load_dataset("fmnist", root)
    check(ds, "fmnist", 40, (1, 28, 28), 10)
    np.testing.assert_allclose(ds.x, norm(imgs[:, None], "fmnist"), atol=1e-6)
    np.testing.assert_array_equal(ds.y, labels)


def test_fmnist_truncated_gz(root):
    raw, _, _ = write_fmnist(root)
    bad = truncate(raw / "train-images-idx3-ubyte.gz", 0.5)
    with pytest.raises(DataError) as e:
        load_dataset("fmnist", root)
    one_line_error(e, "fmnist", "truncated", str(bad), "FashionMNIST/raw")


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"\x00\x00\x08\x01" + (30).to_bytes(4, "big") + bytes(30), "bad idx header"),  # 1-d
        (b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (30, 28, 28)) + bytes(100),
         "header says (30, 28, 28)"),
        (idx_bytes(np.zeros((30, 27, 28), np.uint8)), "expected 28x28"),
    ],
)
def test_fmnist_bad_idx(root, data, problem):
    raw, _, _ = write_fmnist(root)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(data))
    with pytest.raises(DataError) as e:
        load_dataset("fmnist", root)
    one_line_error(e, "fmnist", problem, "train-images-idx3-ubyte.gz")


def test_fmnist_label_problems(root):
    raw, _, _ = write_fmnist(root)
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.full(10, 12, np.uint8))))
    with pytest.raises(DataError) as e:
        load_dataset("fmnist", root)
    one_line_error(e, "fmnist", "label 12 outside 0..9")
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(9, np.uint8))))
    with pytest.raises(DataError) as e:
        load_dataset("fmnist", root)
    one_line_error(e, "fmnist", "9 labels for 10 images")


def test_fmnist100_kmeans_labels_cached(root, monkeypatch):
    write_fmnist(root, n_train=120, n_test=30)
    ds = load_dataset("fmnist100", root, subset=140)
    check(ds, "fmnist100", 140, (784,), 100)
    assert "stand-in" in ds.display_name
    assert set(np.unique(ds.x)) == {0.0, 1.0}
    assert len(np.unique(ds.y)) > 50  # k-means spread the records over many clusters
    # second load: from the cache, k-means is not run again
    import sklearn.cluster

    def boom(*a, **k):
        raise AssertionError("k-means ran again")

    monkeypatch.setattr(sklearn.cluster, "KMeans", boom)
    again = load_dataset("fmnist100", root, subset=140)
    np.testing.assert_array_equal(again.y, ds.y)
    with pytest.raises(DataError) as e:  # default subset is the paper-sized 10,000
        load_dataset("fmnist100", root)
    one_line_error(e, "subset=10000 exceeds the 150 images")


def test_fmnist100_small_cluster_count(root):
    write_fmnist(root, n_train=30, n_test=10)
    ds = load_dataset("fmnist100", root, subset=None, n_clusters=5)
    check(ds, "fmnist100", 40, (784,), 5)


# ---------------------------------------------------------------------------------------
# cache, status, roots


def test_cache_key_follows_source_file(root, cache):
    path, _, y = write_purchase(root, n=10)
    first = load_dataset("purchase100", root)
    np.testing.assert_array_equal(first.y, y)
    path2, _, y2 = write_purchase(root, n=12, seed=9)  # rewrite: new size and mtime
    second = load_dataset("purchase100", root)
    assert len(second) == 12
    np.testing.assert_array_equal(second.y, y2)
    assert len(list(cache.glob("purchase100-*"))) == 2


def test_cached_arrays_builds_once_and_memmaps(cache):
    calls = []

    def build():
        calls.append(1)
        return np.arange(12, dtype=np.uint8).reshape(4, 3), [0, 1, 2, 1]

    x, y = cached_arrays("toy", "k1", build)
    x2, y2 = cached_arrays("toy", "k1", build)
    assert calls == [1]
    assert isinstance(x2, np.memmap) and x2.dtype == np.float32 and y2.dtype == np.int64
    assert not x2.flags.writeable
    np.testing.assert_array_equal(x2, np.arange(12).reshape(4, 3))
    files = sorted(p.name for p in (cache / "toy-k1").iterdir())
    assert files == [".lock", "x.npy", "y.npy"]  # no temp files left behind
    # a damaged cache file is rebuilt, not trusted
    truncate(cache / "toy-k1" / "x.npy", 0.5)
    x3, _ = cached_arrays("toy", "k1", build)
    assert calls == [1, 1] and x3.shape == (4, 3)


def test_cache_dir_and_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("FL_SIM_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FL_SIM_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "fl_sim"
    monkeypatch.delenv("FL_SIM_DATA_ROOT", raising=False)
    assert default_data_root() == Path("data")
    monkeypatch.setenv("FL_SIM_DATA_ROOT", str(tmp_path / "d"))
    assert default_data_root() == tmp_path / "d"


def test_default_root_used_when_none(root, monkeypatch):
    write_location(root, n=31)
    monkeypatch.setenv("FL_SIM_DATA_ROOT", str(root))
    assert len(load_dataset("location30")) == 31


def test_dataset_status(root):
    write_location(root, n=31)
    write_fmnist(root)
    status = {s["name"]: s for s in dataset_status(root)}
    assert list(status) == dataset_names()
    assert set(dataset_names()) >= {"digits", "location30", "purchase100", "texas100", "cifar10",
                                    "cifar100", "cifar10_folder", "cifar100_folder", "fmnist", "fmnist100"}
    for s in status.values():
        assert set(s) == {"name", "display_name", "found", "path", "format"}
        assert isinstance(s["found"], bool) and s["format"]
    found = {n for n, s in status.items() if s["found"]}
    assert found == {"digits", "location30", "fmnist", "fmnist100"}
    assert status["location30"]["path"] == str(root / "location30" / "dataset_location.tgz")
    assert status["purchase100"]["path"] == str(root / "purchase100" / "dataset_purchase")
    assert "stand-in" in status["fmnist100"]["display_name"]


# ---------------------------------------------------------------------------------------
# the real files in ../shared/data, when present (read in place, never copied)


def _shared(rel: str) -> Path:
    p = SHARED / rel
    if not p.exists():
        pytest.skip(f"../shared/data/{rel} not present: real-data check skipped "
                    f"(set FL_SIM_SHARED_DATA to the folder holding it)")
    return p


@pytest.mark.shared_data
def test_real_location30():
    _shared("location30/dataset_location.tgz")
    ds = load_dataset("location30", SHARED)
    check(ds, "location30", 5010, (446,), 30)
    assert set(np.unique(ds.y)) == set(range(30))
    assert set(np.unique(ds.x)) == {0.0, 1.0}


@pytest.mark.shared_data
def test_real_fmnist():
    _shared("FashionMNIST/raw")
    ds = load_dataset("fmnist", SHARED)
    check(ds, "fmnist", 70000, (1, 28, 28), 10)
    assert np.bincount(ds.y).tolist() == [7000] * 10
    assert abs(float(ds.x[:60000].mean())) < 0.01  # the normalization constants fit


@pytest.mark.shared_data
def test_real_cifar10_jpg_tarball_subset():
    _shared("cifar10-jpg.tar.gz")
    ds = load_dataset("cifar10_folder", SHARED, subset=200)
    check(ds, "cifar10_folder", 200, (3, 32, 32), 10)
    assert np.bincount(ds.y).tolist() == [20] * 10
    assert abs(float(ds.x.mean())) < 0.3
