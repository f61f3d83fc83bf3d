import torch

from tunesmith.musicgen.patterns import apply_delay, delay_mask, delay_offsets, revert_delay

P = 99


def test_offsets_mono_and_stereo():
    assert delay_offsets(4, 1) == [0, 1, 2, 3]
    assert delay_offsets(8, 2) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_apply_matches_the_drawn_matrix():
    codes = torch.tensor([[[1, 2, 3], [4, 5, 6], [7, 8, 9], [10, 11, 12]]])  # [1, 4, 3]
    delayed = apply_delay(codes, delay_offsets(4), P)
    assert delayed.tolist() == [[
        [1, 2, 3, P, P, P],
        [P, 4, 5, 6, P, P],
        [P, P, 7, 8, 9, P],
        [P, P, P, 10, 11, 12],
    ]]
    assert torch.equal(delay_mask(3, delay_offsets(4)), delayed[0] != P)


def test_revert_undoes_apply():
    for channels in (1, 2):
        offsets = delay_offsets(4 * channels, channels)
        codes = torch.randint(0, 64, (3, 4 * channels, 17))
        delayed = apply_delay(codes, offsets, P)
        assert delayed.shape == (3, 4 * channels, 17 + 3)
        assert torch.equal(revert_delay(delayed, offsets, 17), codes)


def test_stereo_pairs_share_a_delay():
    codes = torch.arange(8 * 2).view(1, 8, 2)
    delayed = apply_delay(codes, delay_offsets(8, 2), P)
    assert torch.equal(delayed[0, 0], delayed[0, 0]) and delayed[0, 1, 0] == codes[0, 1, 0]
    assert delayed[0, 2, 0] == P and delayed[0, 3, 0] == P and delayed[0, 3, 1] == codes[0, 3, 0]
