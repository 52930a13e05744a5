from tether.engine.loop import batch_indices, split_for_process


def test_batch_indices_cover_each_epoch_once_and_are_deterministic():
    first_epoch = batch_indices(10, 5, 0, seed=1) + batch_indices(10, 5, 1, seed=1)
    assert sorted(first_epoch) == list(range(10))
    assert batch_indices(10, 5, 3, seed=1) == batch_indices(10, 5, 3, seed=1)
    assert batch_indices(10, 5, 0, seed=1) != batch_indices(10, 5, 0, seed=2)
    # a batch crossing an epoch boundary takes the tail of one permutation and the head of the next
    crossing = batch_indices(10, 4, 2, seed=0)
    assert crossing[:2] == batch_indices(10, 2, 4, seed=0)
    assert len(crossing) == 4


def test_split_for_process_shares_and_micro_batches():
    indices = list(range(8))
    assert split_for_process(indices, 0, 2, 2) == [[0, 1], [2, 3]]
    assert split_for_process(indices, 1, 2, 2) == [[4, 5], [6, 7]]
    assert split_for_process(indices, 0, 1, 3) == [[0, 1, 2], [3, 4, 5], [6, 7]]
