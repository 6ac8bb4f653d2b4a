"""array_view reads a reply's arrays in place and decodes exactly what Flower's Array.numpy() decodes."""

import io

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from strategies.messages import array_view, array_views

ARRAYS = [
    np.arange(24, dtype=np.float32).reshape(2, 3, 4),
    np.array(2.5, dtype=np.float32),  # 0-d
    np.zeros((0, 3), dtype=np.float32),  # empty
    np.arange(5, dtype=np.int64),  # a BatchNorm step counter
    np.linspace(-1, 1, 7, dtype=np.float64),
    np.array([True, False]),
    np.arange(6, dtype=">f4").reshape(2, 3),  # big-endian
]


def test_views_equal_flowers_decode_in_value_dtype_and_shape_and_are_read_only():
    record = ArrayRecord(ARRAYS)
    views = array_views(record)
    for view, decoded in zip(views, record.to_numpy_ndarrays(), strict=True):
        assert view.dtype == decoded.dtype and view.shape == decoded.shape
        np.testing.assert_array_equal(view, decoded)
        assert not view.flags.writeable
    assert not views[0].flags.owndata  # read in place, not copied


def test_a_fortran_ordered_array_goes_through_flowers_decode():
    fortran = np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3))
    view = array_view(Array(fortran))
    np.testing.assert_array_equal(view, fortran)
    assert view.flags.f_contiguous and view.flags.writeable  # decoded by numpy, not viewed


def _payload(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _raw(data: bytes) -> Array:
    return Array(dtype="float32", shape=(4,), stype="numpy.ndarray", data=data)


def test_malformed_payloads_raise_like_flowers_decode_and_trailing_bytes_are_ignored_like_it():
    good = _payload(np.arange(4, dtype=np.float32))
    for data in (b"not an array", good[:-3]):  # garbage, truncated values
        with pytest.raises(ValueError):
            _raw(data).numpy()
        with pytest.raises(ValueError):
            array_view(_raw(data))
    trailing = _raw(good + b"junk")
    np.testing.assert_array_equal(array_view(trailing), trailing.numpy())
    header = good.replace(b"'<f4'", b"'|O' ")  # an object array: never unpickled
    with pytest.raises(ValueError, match="allow_pickle"):
        array_view(_raw(header))
