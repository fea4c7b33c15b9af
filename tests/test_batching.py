"""reviewtool.batching.id_chunks: the one id-chunking helper."""

import pytest

from reviewtool.batching import id_chunks


@pytest.mark.parametrize(
    ("ids", "size", "chunks"),
    [
        ([], 3, []),
        ([1, 2, 3], 3, [[1, 2, 3]]),
        ([1, 2, 3, 4, 5, 6, 7], 3, [[1, 2, 3], [4, 5, 6], [7]]),
        ([5, 4], 1, [[5], [4]]),
    ],
)
def test_chunks_keep_order_and_only_the_last_is_short(ids, size, chunks):
    assert list(id_chunks(ids, size)) == chunks


def test_a_lazy_iterable_is_read_one_chunk_at_a_time():
    read = []

    def ids():
        for pk in range(1, 8):
            read.append(pk)
            yield pk

    chunks = id_chunks(ids(), 3)
    assert next(chunks) == [1, 2, 3]
    assert read == [1, 2, 3]
    assert list(chunks) == [[4, 5, 6], [7]]


def test_a_size_below_one_is_refused():
    with pytest.raises(ValueError):
        list(id_chunks([1], 0))
