import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore.errors import CorruptFileError
from kvstore.fileformat import Header, payload_descriptor, payload_view

hexkey = st.binary(min_size=20, max_size=20).map(bytes.hex)

headers = st.builds(
    Header,
    namespace_hash=st.binary(min_size=8, max_size=8),
    key=hexkey,
    tokens=st.integers(0, 2**40),
    payload_len=st.integers(0, 2**40),
    checksum=st.integers(0, 2**32 - 1),
    parent=st.none() | hexkey,
    anchor=st.none() | hexkey,
    ancestors=st.lists(hexkey, max_size=5).map(tuple),
    is_tail=st.booleans(),
    priority=st.integers(-(2**31), 2**31 - 1),
    inserted_at=st.floats(allow_nan=False, allow_infinity=False),
)


@given(headers)
def test_header_round_trips(header):
    assert Header.decode(header.encode()) == header
    assert len(header.encode()) == header.header_len


@given(headers, st.data())
def test_any_single_flipped_byte_is_detected(header, data):
    raw = bytearray(header.encode())
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CorruptFileError):
        Header.decode(bytes(raw))


@given(st.binary(max_size=400))
def test_fuzzed_headers_raise_only_corrupt_file_error(blob):
    try:
        Header.decode(blob)
    except CorruptFileError:
        pass


@given(headers, st.integers(0, 300))
def test_truncated_headers_are_rejected(header, cut):
    raw = header.encode()
    cut = min(cut, len(raw) - 1)
    with pytest.raises(CorruptFileError):
        Header.decode(raw[:cut])


@pytest.mark.parametrize("array", [
    np.arange(12, dtype=np.float16).reshape(3, 4),
    np.arange(6, dtype=np.int8),
    np.zeros((2, 0, 3), dtype=np.float32),
    np.arange(10, dtype=">i4"),
    np.arange(20, dtype=np.uint8).reshape(4, 5)[:, ::2],  # non-contiguous
    np.array([1 + 2j], dtype=np.complex64),
    np.array([True, False]),
])
def test_numpy_payloads_round_trip_with_dtype_and_shape(array):
    view, dtype, shape = payload_descriptor(array)
    header = Header(namespace_hash=b"n" * 8, key="ab" * 20, tokens=1, payload_len=view.nbytes,
                    checksum=0, dtype=dtype, shape=shape)
    back = payload_view(bytearray(view.tobytes()), Header.decode(header.encode()))
    assert back.shape == array.shape and back.dtype == array.dtype.newbyteorder("=")
    np.testing.assert_array_equal(back, array)


def test_object_and_structured_arrays_are_refused():
    with pytest.raises(TypeError, match="plain numeric dtype"):
        payload_descriptor(np.array([object()], dtype=object))
    with pytest.raises(TypeError, match="plain numeric dtype"):
        payload_descriptor(np.zeros(2, dtype=[("a", "i4")]))
    with pytest.raises(TypeError, match="payload must be"):
        payload_descriptor("text")


def test_a_header_claiming_an_object_dtype_is_corrupt():
    header = Header(namespace_hash=b"n" * 8, key="ab" * 20, tokens=1, payload_len=8, checksum=0,
                    dtype="|O", shape=(1,))
    with pytest.raises(CorruptFileError, match="numeric"):
        Header.decode(header.encode())
