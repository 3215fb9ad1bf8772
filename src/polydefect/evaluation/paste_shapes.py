"""Defect-like shapes for the validation pastes: small spots and thin scratches, sized by the object they lie on.

Perlin blobs (the training pastes of DRAEM and the feature segmenter) are large and soft; the defects of moulded
and machined parts are mostly points (specks, pits, sink marks) and lines (scratches, cracks, flow lines). A
validation set of blobs alone ranks detectors by how they see blobs. Sizes follow the object's extent (the square
root of its area), so one setting means the same on a 200 px tile as on a 1250 px strip; they were fixed from
that reasoning, before any data set was scored with them.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

SPOT_DIAMETER = (0.01, 0.05)  # a spot's diameter as a share of the object's extent
SCRATCH_LENGTH = (0.1, 0.4)  # a scratch's length as a share of the object's extent
SCRATCH_WIDTH = 0.005  # a scratch's width as a share of the object's extent (at least 1 px)
SHIFT = (0.15, 0.5)  # how far the pasted pixels move from their own grey level, darker or brighter (of 1.0)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand(1, generator=generator).item()


def _anchor(inside: np.ndarray, generator: torch.Generator) -> tuple[int, int]:
    """A random (x, y) pixel of the object."""
    ys, xs = np.nonzero(inside)
    pick = int(torch.randint(0, len(ys), (1,), generator=generator))
    return int(xs[pick]), int(ys[pick])


def spot_mask(inside: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """(H, W) bool: one filled ellipse (aspect up to 2:1, any angle) centred on the object."""
    extent = math.sqrt(inside.sum())
    diameter = extent * _uniform(generator, *SPOT_DIAMETER)
    axes = (max(1, round(diameter / 2)), max(1, round(diameter / 2 * _uniform(generator, 0.5, 1.0))))
    canvas = np.zeros(inside.shape, np.uint8)
    angle = _uniform(generator, 0, 180)
    cv2.ellipse(canvas, _anchor(inside, generator), axes, angle, 0, 360, 1, thickness=-1)
    return canvas.astype(bool)


def scratch_mask(inside: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """(H, W) bool: one thin, gently curved line (a quadratic Bezier) starting on the object."""
    extent = math.sqrt(inside.sum())
    length = extent * _uniform(generator, *SCRATCH_LENGTH)
    start = np.array(_anchor(inside, generator), np.float64)
    heading = _uniform(generator, 0, 2 * math.pi)
    end = start + length * np.array([math.cos(heading), math.sin(heading)])
    bend = length * _uniform(generator, -0.25, 0.25) * np.array([-math.sin(heading), math.cos(heading)])
    control = (start + end) / 2 + bend
    t = np.linspace(0, 1, max(8, round(length)))[:, None]
    curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t**2 * end
    canvas = np.zeros(inside.shape, np.uint8)
    width = max(1, round(SCRATCH_WIDTH * extent))
    cv2.polylines(canvas, [np.round(curve).astype(np.int32)], False, 1, thickness=width)
    return canvas.astype(bool)


def shifted(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(1, C, H, W) in [0, 1] -> the same surface darker or brighter by a random step: what fills a spot or a
    scratch (a pit or speck is darker, a stress mark or burr brighter)."""
    step = _uniform(generator, *SHIFT) * (1 if bool(torch.rand(1, generator=generator) < 0.5) else -1)
    return (image + step).clamp(0, 1)
