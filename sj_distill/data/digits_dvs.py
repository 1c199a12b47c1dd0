"""``digits-dvs``: the digits images seen by a simulated event camera on a moving mount.

Each upsampled digit is swept along three saccades (a triangle of ``amplitude`` pixels, as the
N-MNIST recordings were made) over ``n_steps`` micro-steps of ``step_us`` microseconds. A pixel
emits an event when its log intensity has moved by at least ``contrast`` since its last event
(ON for brighter, OFF for darker), and its reference level is set to the new value. Events
are a structured array with fields ``x, y, t`` (microseconds) and ``p`` (0 = OFF, 1 = ON),
sorted by time, like tonic's; they are framed into ``[T, 2, H, W]`` counts over ``T`` equal
time bins, with tonic's ``ToFrame(n_time_bins=T)`` when the ``dvs`` extra is installed, else
with :func:`frame_events`, which bins identically.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .digits import load_digits_split

EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])


def saccade_offsets(n_steps: int, amplitude: float) -> np.ndarray:
    """``[n_steps, 2]`` (dx, dy) pixel offsets along the triangle (0,0) -> (a,a) -> (2a,0) -> (0,0)."""
    corners = np.array([[0, 0], [amplitude, amplitude], [2 * amplitude, 0], [0, 0]], np.float64)
    position = np.linspace(0, 3, n_steps)
    segment = np.minimum(position.astype(int), 2)
    frac = (position - segment)[:, None]
    return corners[segment] * (1 - frac) + corners[segment + 1] * frac


def sweep(images: torch.Tensor, offsets: np.ndarray) -> torch.Tensor:
    """``images [N,H,W]`` shifted by each (dx, dy) with bilinear sampling -> ``[n_steps, N, H, W]``."""
    N, H, W = images.shape
    theta = torch.zeros(len(offsets), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -2.0 * torch.as_tensor(offsets[:, 0], dtype=torch.float32) / W
    theta[:, 1, 2] = -2.0 * torch.as_tensor(offsets[:, 1], dtype=torch.float32) / H
    grid = F.affine_grid(theta, (len(offsets), N, H, W), align_corners=False)
    return F.grid_sample(images.float().unsqueeze(0).expand(len(offsets), N, H, W), grid,
                         mode="bilinear", padding_mode="zeros", align_corners=False)


def simulate_events(images: torch.Tensor, n_steps: int = 60, amplitude: float = 2.0,
                    contrast: float = 0.25, step_us: int = 5000, eps: float = 0.05):
    """Events of each image in ``images [N,H,W]`` (values in [0, 1]): a list of N structured
    arrays, see the module docstring."""
    log_frames = torch.log(sweep(images, saccade_offsets(n_steps, amplitude)) + eps).numpy()
    reference = log_frames[0].copy()
    fired = np.zeros((images.shape[0], n_steps - 1) + images.shape[1:], bool)
    brighter = np.zeros_like(fired)
    for step in range(1, n_steps):
        change = log_frames[step] - reference
        fired[:, step - 1] = np.abs(change) >= contrast
        brighter[:, step - 1] = change > 0
        reference[fired[:, step - 1]] = log_frames[step][fired[:, step - 1]]
    n, s, y, x = np.nonzero(fired)  # sorted by image, then step, then row, then column
    events = np.empty(len(n), EVENT_DTYPE)
    events["x"], events["y"], events["t"] = x, y, (s + 1) * step_us
    events["p"] = brighter[n, s, y, x]
    bounds = np.searchsorted(n, np.arange(images.shape[0] + 1))
    recordings = [events[bounds[i]:bounds[i + 1]] for i in range(images.shape[0])]
    return recordings


def frame_events(events: np.ndarray, sensor_size, n_time_bins: int) -> np.ndarray:
    """Count events into ``[n_time_bins, P, H, W]`` int16 frames over equal time bins.

    ``sensor_size`` is ``(W, H, P)``. Bin ``i`` covers ``[t0 + i*w, t0 + (i+1)*w)`` with
    ``t0`` the first timestamp and ``w = (t_last - t0) // n_time_bins`` (integer
    microseconds); events at or after ``t0 + n_time_bins*w`` fall outside every bin. This is
    the binning of tonic's ``ToFrame(n_time_bins=...)``.
    """
    W, H, P = sensor_size
    frames = np.zeros((n_time_bins, P, H, W), np.int16)
    if len(events) == 0:
        return frames
    t = events["t"].astype(np.int64)
    width = (t[-1] - t[0]) // n_time_bins
    if width == 0:
        return frames
    bins = (t - t[0]) // width
    keep = bins < n_time_bins
    np.add.at(frames, (bins[keep], events["p"][keep].astype(np.int64),
                       events["y"][keep].astype(np.int64), events["x"][keep].astype(np.int64)), 1)
    return frames


def to_frames(events: np.ndarray, sensor_size, n_time_bins: int) -> np.ndarray:
    """Frame with tonic's ``ToFrame`` when tonic is installed, else with :func:`frame_events`."""
    try:
        from tonic.transforms import ToFrame
    except ImportError:
        return frame_events(events, sensor_size, n_time_bins)
    return ToFrame(sensor_size=tuple(sensor_size), n_time_bins=n_time_bins)(events)


class DigitsDVSDataset(Dataset):
    """Event-camera digits: items are ``(frames [T, 2, H, W] float32 counts, label int)``.

    All recordings are simulated and framed once, at construction (about a second).
    Args:
        train: training (80%) or test (20%) split, the same split as ``digits``.
        img_size: sensor height/width in pixels.
        T: number of time bins (frames).
    """

    num_classes = 10
    in_chans = 2
    time_major = True

    def __init__(self, train: bool = True, img_size: int = 32, T: int = 8, n_steps: int = 60,
                 amplitude: float = 2.0, contrast: float = 0.25):
        images, self.labels = load_digits_split(train, img_size)
        sensor = (img_size, img_size, 2)
        recordings = simulate_events(images[:, 0], n_steps, amplitude, contrast)
        self.frames = torch.stack([torch.from_numpy(to_frames(events, sensor, T).astype(np.float32))
                                   for events in recordings])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.frames[index], int(self.labels[index])
