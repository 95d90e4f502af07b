"""The IDX reader/writer shared by MNIST and Fashion-MNIST."""
import gzip

import numpy as np
import pytest

from cogen.data.idx import IdxFormatError, read_idx, write_idx


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_images_and_labels_round_trip(tmp_path, name):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    back = read_idx(write_idx(tmp_path / name, images))
    assert back.dtype == np.uint8 and back.shape == (7, 28, 28) and np.array_equal(back, images)
    assert np.array_equal(read_idx(write_idx(tmp_path / f"labels-{name}", labels)), labels)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_other_types_round_trip_big_endian(tmp_path, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
    path = write_idx(tmp_path / "a.idx", array)
    assert np.array_equal(read_idx(path), array)
    raw = path.read_bytes()
    assert raw[3] == 3 and int.from_bytes(raw[4:8], "big") == 2  # ndim, then big-endian sizes


def test_reads_the_layout_of_the_real_files(tmp_path):
    """Header written by hand as in LeCun's description: magic 0x00000803, then 3 big-endian sizes."""
    pixels = bytes(range(2 * 2 * 3))
    header = bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(header + pixels)
    assert read_idx(tmp_path / "t10k-images-idx3-ubyte.gz").tolist() == np.arange(12).reshape(2, 2, 3).tolist()


def test_bad_files_are_named(tmp_path):
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(IdxFormatError, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    path = write_idx(tmp_path / "cut", np.zeros((4, 5), np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(IdxFormatError, match="truncated"):
        read_idx(path)
