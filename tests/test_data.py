"""Embedded data: the digits split and the simulated event camera's events and frames."""
import numpy as np
import pytest
import torch

from sj_distill.data.digits import DigitsDataset, RandomShift, load_digits_split
from sj_distill.data.digits_dvs import EVENT_DTYPE, frame_events, saccade_offsets, simulate_events


def _events(rows):
    events = np.empty(len(rows), EVENT_DTYPE)
    for i, (x, y, t, p) in enumerate(rows):
        events[i] = (x, y, t, p)
    return events


def test_digits_split_is_deterministic_stratified_and_disjoint():
    train_x, train_y = load_digits_split(True, img_size=8)
    test_x, test_y = load_digits_split(False, img_size=8)
    assert (len(train_y), len(test_y)) == (1437, 360)
    counts = torch.bincount(test_y)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: 20% of ~180 per class
    flat_train = {tuple(r) for r in train_x.flatten(1).tolist()}
    overlap = sum(tuple(r) in flat_train for r in test_x.flatten(1).tolist())
    assert overlap <= 2  # the raw dataset itself holds a few duplicate images
    again_x, _ = load_digits_split(False, img_size=8)
    assert torch.equal(test_x, again_x)
    assert float(train_x.max()) == 1.0 and float(train_x.min()) == 0.0


def test_digits_dataset_upsamples_and_shifts():
    data = DigitsDataset(train=True, img_size=32)
    image, label = data[0]
    assert image.shape == (1, 32, 32) and 0 <= label < 10
    shifted = RandomShift(2)(torch.ones(1, 4, 4))
    assert shifted.shape == (1, 4, 4) and float(shifted.sum()) >= 4  # at most 2 rows+cols lost


def test_frame_events_bins_like_tonic_by_hand():
    # t0 = 0, last t = 40, 2 bins -> width 20: bins [0,20), [20,40); the event at t=40 is dropped
    events = _events([(0, 0, 0, 1), (1, 0, 10, 0), (1, 0, 19, 0), (2, 1, 25, 1), (3, 1, 40, 1)])
    frames = frame_events(events, sensor_size=(4, 2, 2), n_time_bins=2)
    assert frames.shape == (2, 2, 2, 4) and frames.dtype == np.int16
    expected = np.zeros((2, 2, 2, 4), np.int16)
    expected[0, 1, 0, 0] = 1
    expected[0, 0, 0, 1] = 2
    expected[1, 1, 1, 2] = 1
    assert np.array_equal(frames, expected)


def test_frame_events_shorter_than_bins_gives_empty_frames():
    events = _events([(0, 0, 5, 1), (0, 0, 6, 1)])
    assert frame_events(events, (1, 1, 2), n_time_bins=3).sum() == 0


def test_simulated_events_follow_the_moving_edge():
    offsets = saccade_offsets(7, 2.0)
    assert offsets[0].tolist() == [0, 0] and offsets[-1].tolist() == [0, 0]
    assert offsets.max() == pytest.approx(4.0)
    image = torch.zeros(1, 16, 16)
    image[0, 4:12, 4:12] = 1.0
    (events,) = simulate_events(image, n_steps=13, amplitude=2.0)
    assert len(events) > 0 and np.all(np.diff(events["t"]) >= 0)
    first = events[events["t"] == events["t"][0]]
    # moving right and down: the leading (right/bottom) edge brightens, the trailing one darkens
    assert first["x"][first["p"] == 1].mean() > first["x"][first["p"] == 0].mean()
    assert set(np.unique(events["p"]).tolist()) == {0, 1}


def test_own_framing_matches_tonic_when_installed():
    tonic = pytest.importorskip("tonic.transforms", reason="the optional 'dvs' extra is not installed")
    images, _ = load_digits_split(False, img_size=32)
    for events in simulate_events(images[:20, 0]):
        for T in (1, 5, 8):
            assert np.array_equal(tonic.ToFrame(sensor_size=(32, 32, 2), n_time_bins=T)(events),
                                  frame_events(events, (32, 32, 2), T))
