"""Sample moulding defects on a part's surface: scratches, sink marks, flow lines and black specks.

A defect is a capsule around a point drawn area-weighted from the faces that look up or sideways (the ones the
scanner sees), in the part's object space; its sizes come from the profile's "defects" keys (millimetres).
"""

from __future__ import annotations

import numpy as np
from materials import Defect

KINDS = ("scratch", "sink_mark", "flow_lines", "black_speck")


def _surface_point(mesh, rng: np.random.Generator, up: tuple = (0.0, 0.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """A random point on the visible surface and its normal, area-weighted over triangles; `up` is the world's
    up in the part's own frame (a part lying on its side shows other faces)."""
    mesh.calc_loop_triangles()
    tris = mesh.loop_triangles
    count = len(tris)
    # foreach_get needs buffers of the property's own type (int32/float32): others are filled with garbage
    corners = np.empty(count * 3, np.int32)
    tris.foreach_get("vertices", corners)
    normals = np.empty(count * 3, np.float32)
    tris.foreach_get("normal", normals)
    areas = np.empty(count, np.float32)
    tris.foreach_get("area", areas)
    coords = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", coords)
    coords, normals = coords.reshape(-1, 3).astype(np.float64), normals.reshape(-1, 3).astype(np.float64)
    areas = areas.astype(np.float64)
    weights = areas * (normals @ np.asarray(up, np.float64) > -0.3)  # never on the underside
    index = rng.choice(count, p=weights / weights.sum())
    u, v = rng.random(2)
    if u + v > 1:
        u, v = 1 - u, 1 - v
    a, b, c = coords[corners.reshape(-1, 3)[index]]
    return a + u * (b - a) + v * (c - a), normals[index]


def _tangent(normal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random unit direction in the plane of the surface."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(normal[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    first = np.cross(normal, helper)
    first /= np.linalg.norm(first)
    second = np.cross(normal, first)
    angle = rng.uniform(0, 2 * np.pi)
    return np.cos(angle) * first + np.sin(angle) * second


def sample_defect(kind: str, mesh, rng: np.random.Generator, sizes: dict, up: tuple = (0.0, 0.0, 1.0)) -> Defect:
    """One defect of `kind` on `mesh`; `sizes` holds [min, max] millimetre ranges per kind (profile keys), `up`
    the world's up in the part's frame."""
    point, normal = _surface_point(mesh, rng, up)
    low, high = sizes[kind]
    size = rng.uniform(low, high) / 1000
    tangent = _tangent(normal, rng)
    centre = tuple(float(x) for x in point)
    if kind == "scratch":  # size = length; stress-whitened groove
        half = tangent * size / 2
        radius = rng.uniform(0.35, 0.55) / 1000
        return Defect(kind, tuple(map(float, point - half)), tuple(map(float, point + half)), radius, 0.8, 0.0002, 0.35)
    if kind == "sink_mark":  # size = diameter; shallow dull depression
        return Defect(kind, centre, centre, size / 2, -0.45, 0.0004, 0.25)
    if kind == "flow_lines":  # size = diameter; ripples across the flow direction
        wavelength = rng.uniform(0.6, 0.9) / 1000
        wave = tuple(float(x) for x in tangent / wavelength)
        return Defect(kind, centre, centre, size / 2, 0.5, 0.00005, 0.1, wave)
    if kind == "black_speck":  # size = diameter; burnt material inclusion
        return Defect(kind, centre, centre, size / 2, -0.92, 0.0, 0.2)
    raise ValueError(f"synth.defects.kinds: unknown defect kind {kind!r}; choose from {list(KINDS)}")
