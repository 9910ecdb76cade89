"""Write tiny data files in the exact formats of the real data sets, for loader tests.

Each writer returns the ground truth it wrote (features/pixels and 0-based labels) so a
test can compare the loaded arrays value by value. Formats:

- privacytrustlab text: Purchase100 ``label,f1..f600`` (labels 1..100), Location-30
  ``"label",f1..f446`` (quoted labels 1..30), Texas100 ``texas/100/feats`` (6169 values a
  line) + ``texas/100/labels`` (one label 1..100 a line); each also as the tar.gz the
  collection ships (dataset_purchase.tgz, dataset_location.tgz, dataset_texas.tgz);
- CIFAR-10/100 python format: pickled dicts (protocol 2, as the published files) with
  uint8 ``data`` rows of 3072 = R, G, B planes of 32x32, in torchvision's directory layout;
- image folders ``train/<class>/NNNN.{png,jpg}``, ``test/<class>/...`` and a tar.gz of it;
- Fashion-MNIST idx files (big-endian header, magic 0x00000803 / 0x00000801), gzipped,
  in torchvision's ``FashionMNIST/raw`` layout.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def make_tgz(path: Path, members: dict[str, bytes], dirs: tuple[str, ...] = ()) -> Path:
    """A tar.gz at ``path`` holding ``members`` (name → content) and directory entries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o775
            tf.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o664
            tf.addfile(info, io.BytesIO(data))
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut ``path`` to a fraction of its bytes, like a half-finished download."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _binary_rows(n: int, d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = (rng.random((n, d)) < 0.3).astype(np.uint8)
    y = np.arange(n) % k  # every class at least once when n >= k, labels cover 0 and k-1
    rng.shuffle(y)
    return x, y.astype(np.int64)


def _csv(x: np.ndarray, y: np.ndarray | None, quoted: bool) -> bytes:
    lines = []
    for i, row in enumerate(x):
        vals = ",".join(str(int(v)) for v in row)
        if y is None:
            lines.append(vals)
        else:
            lab = f'"{y[i] + 1}"' if quoted else str(y[i] + 1)
            lines.append(f"{lab},{vals}")
    return ("\n".join(lines) + "\n").encode()


def write_location(root: Path, n: int = 40, tgz: bool = True, seed: int = 0):
    """``root/location30/dataset_location.tgz`` (member ``bangkok``) or ``.../bangkok``."""
    x, y = _binary_rows(n, 446, 30, seed)
    data = _csv(x, y, quoted=True)
    d = root / "location30"
    d.mkdir(parents=True, exist_ok=True)
    path = make_tgz(d / "dataset_location.tgz", {"bangkok": data}) if tgz else d / "bangkok"
    if not tgz:
        path.write_bytes(data)
    return path, x, y


def write_purchase(root: Path, n: int = 120, tgz: bool = False, seed: int = 1):
    """``root/purchase100/dataset_purchase`` or ``.../dataset_purchase.tgz`` holding it."""
    x, y = _binary_rows(n, 600, 100, seed)
    data = _csv(x, y, quoted=False)
    d = root / "purchase100"
    d.mkdir(parents=True, exist_ok=True)
    if tgz:
        path = make_tgz(d / "dataset_purchase.tgz", {"dataset_purchase": data})
    else:
        path = d / "dataset_purchase"
        path.write_bytes(data)
    return path, x, y


def write_texas(root: Path, n: int = 12, tgz: bool = False, seed: int = 2):
    """``root/texas100/texas/100/{feats,labels}`` or ``root/texas100/dataset_texas.tgz``."""
    x, y = _binary_rows(n, 6169, 100, seed)
    feats = _csv(x, None, quoted=False)
    labels = ("\n".join(str(v + 1) for v in y) + "\n").encode()
    d = root / "texas100"
    if tgz:
        path = make_tgz(d / "dataset_texas.tgz",
                        {"texas/100/feats": feats, "texas/100/labels": labels},
                        dirs=("texas", "texas/100"))
    else:
        path = d / "texas" / "100"
        path.mkdir(parents=True, exist_ok=True)
        (path / "feats").write_bytes(feats)
        (path / "labels").write_bytes(labels)
    return path, x, y


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)  # the published batches are protocol-2 pickles


def _images(n: int, seed: int) -> np.ndarray:
    """uint8 (n, 3, 32, 32) random images."""
    return np.random.default_rng(seed).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)


def write_cifar10(root: Path, per_batch: int = 4, seed: int = 3):
    """``root/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``.

    Returns (images uint8 (n, 3, 32, 32), labels) in load order: batches 1..5, then test.
    """
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True, exist_ok=True)
    imgs, labs = [], []
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        x = _images(per_batch, seed + b)
        y = [(b * per_batch + i) % 10 for i in range(per_batch)]
        label = "testing batch 1 of 1" if name == "test_batch" else f"training batch {b + 1} of 5"
        _pickle(d / name, {
            "batch_label": label,
            "labels": y,
            "data": x.reshape(per_batch, 3072),  # rows: 1024 R, 1024 G, 1024 B
            "filenames": [f"img_{b}_{i}.png" for i in range(per_batch)],
        })
        imgs.append(x)
        labs += y
    _pickle(d / "batches.meta", {"num_cases_per_batch": per_batch, "label_names": CIFAR10_CLASSES,
                                 "num_vis": 3072})
    return np.concatenate(imgs), np.asarray(labs, dtype=np.int64)


def vouch_for(directory: Path, sums: Path) -> Path:
    """``sums``: ``sha256sum``'s output for every file in ``directory`` (the user vouching for
    non-official pickled files, see fl_sim.data.pickles); returns ``sums``."""
    lines = [f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f}" for f in sorted(directory.iterdir()) if f.is_file()]
    sums.write_text("\n".join(lines) + "\n")
    return sums


def write_cifar100(root: Path, n_train: int = 10, n_test: int = 5, seed: int = 4):
    """``root/cifar-100-python/{train,test,meta}`` with fine and coarse labels."""
    d = root / "cifar-100-python"
    d.mkdir(parents=True, exist_ok=True)
    imgs, labs = [], []
    for j, (name, n) in enumerate([("train", n_train), ("test", n_test)]):
        x = _images(n, seed + j)
        fine = [(97 * (j * 1000 + i)) % 100 for i in range(n)]
        _pickle(d / name, {
            "filenames": [f"f_{j}_{i}.png" for i in range(n)],
            "batch_label": f"{'training' if j == 0 else 'testing'} batch 1 of 1",
            "fine_labels": fine,
            "coarse_labels": [v // 5 for v in fine],
            "data": x.reshape(n, 3072),
        })
        imgs.append(x)
        labs += fine
    _pickle(d / "meta", {"fine_label_names": [f"class{i:02d}" for i in range(100)],
                         "coarse_label_names": [f"super{i:02d}" for i in range(20)]})
    return np.concatenate(imgs), np.asarray(labs, dtype=np.int64)


def _encode(img_chw: np.ndarray, ext: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img_chw.transpose(1, 2, 0)).save(buf, format="PNG" if ext == "png" else "JPEG")
    return buf.getvalue()


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB")).transpose(2, 0, 1)


def image_tree_members(classes: list[str], n_train: int, n_test: int, ext: str = "png", seed: int = 5):
    """Members of a tree ``train/<class>/NNNN.<ext>``, ``test/<class>/NNNN.<ext>``.

    Returns (members name → bytes, directory names, images uint8 (n, 3, 32, 32), labels) with
    the images in the order the loader reads them: train then test, class by sorted name,
    files by name.
    """
    members, dirs, imgs, labs = {}, ["train", "test"], [], []
    rng_seed = seed
    for split, n in (("train", n_train), ("test", n_test)):
        for c, cname in enumerate(sorted(classes)):
            dirs.append(f"{split}/{cname}")
            x = _images(n, rng_seed)
            rng_seed += 1
            for i in range(n):
                data = _encode(x[i], ext)
                members[f"{split}/{cname}/{i:04d}.{ext}"] = data
                # JPEG is lossy: the truth is what a decoder reads back, not what went in
                imgs.append(x[i] if ext == "png" else _decode(data))
                labs.append(c)
    return members, dirs, np.stack(imgs), np.asarray(labs, dtype=np.int64)


def write_image_tree(top: Path, classes: list[str], n_train: int = 2, n_test: int = 1,
                     ext: str = "png", tgz: bool = False, seed: int = 5):
    """The tree under directory ``top``, or (tgz=True) a tar.gz at ``top`` holding it."""
    members, dirs, x, y = image_tree_members(classes, n_train, n_test, ext, seed)
    if tgz:
        make_tgz(top, members, dirs=tuple(dirs))
    else:
        for name, data in members.items():
            (top / name).parent.mkdir(parents=True, exist_ok=True)
            (top / name).write_bytes(data)
    return top, x, y


def idx_bytes(arr: np.ndarray) -> bytes:
    """An idx file of unsigned bytes: 0, 0, 0x08, ndim, big-endian uint32 dims, payload."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_fmnist(root: Path, n_train: int = 30, n_test: int = 10, gz: bool = True, seed: int = 6):
    """``root/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.

    Returns (images uint8 (n, 28, 28), labels) train then test.
    """
    d = root / "FashionMNIST" / "raw"
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    imgs, labs = [], []
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            data = idx_bytes(arr)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (d / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (d / name).write_bytes(data)
        imgs.append(x)
        labs.append(y.astype(np.int64))
    return d, np.concatenate(imgs), np.concatenate(labs)
