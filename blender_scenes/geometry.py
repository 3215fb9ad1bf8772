"""Meshes of the scene: the procedural LEGO-like brick, the holder plate, and user parts loaded from files.

Everything is in metres with z up; a part's origin is the centre of its footprint, so it stands on z = 0.
"""

from __future__ import annotations

import math
from pathlib import Path

import bmesh
import bpy
from mathutils import Matrix, Vector

BRICK_PITCH = 0.008  # stud pitch of LEGO-compatible bricks
BRICK_HEIGHT = 0.0096
STUD_RADIUS = 0.0024
STUD_HEIGHT = 0.0017
PLAY = 0.0001  # bricks are 0.1 mm smaller than the grid on each side


def _finish_mesh(name: str, bm: bmesh.types.BMesh) -> bpy.types.Mesh:
    """Triangulated, smooth shading with sharp edges above 35 degrees: round studs, crisp brick edges.

    Triangulating here makes the renders deterministic: Blender's own tessellation of n-gons can differ
    between runs, and with it the triangles Cycles renders and the defect positions sampled on them.
    """
    bmesh.ops.triangulate(bm, faces=bm.faces, quad_method="FIXED", ngon_method="EAR_CLIP")
    mesh = bpy.data.meshes.new(name)
    bm.to_mesh(mesh)
    bm.free()
    for polygon in mesh.polygons:
        polygon.use_smooth = True
    mesh.set_sharp_from_angle(angle=math.radians(35))
    return mesh


def brick_mesh(name: str, studs_x: int, studs_y: int, bevel_m: float = 0.0003) -> bpy.types.Mesh:
    """A closed brick of studs_x x studs_y studs, bevelled edges, studs on top (the hollow underside is never seen)."""
    size_x, size_y = studs_x * BRICK_PITCH - 2 * PLAY, studs_y * BRICK_PITCH - 2 * PLAY
    bm = bmesh.new()
    body = bmesh.ops.create_cube(bm, size=1.0)["verts"]
    bmesh.ops.scale(bm, vec=(size_x, size_y, BRICK_HEIGHT), verts=body)
    bmesh.ops.translate(bm, vec=(0.0, 0.0, BRICK_HEIGHT / 2), verts=body)
    body_edges = list({edge for vert in body for edge in vert.link_edges})
    bmesh.ops.bevel(bm, geom=body + body_edges, offset=bevel_m, segments=3, affect="EDGES", profile=0.5)
    for i in range(studs_x):
        for j in range(studs_y):
            centre = Vector(((i - (studs_x - 1) / 2) * BRICK_PITCH, (j - (studs_y - 1) / 2) * BRICK_PITCH))
            matrix = Matrix.Translation((centre.x, centre.y, BRICK_HEIGHT + STUD_HEIGHT / 2))
            bmesh.ops.create_cone(
                bm,
                cap_ends=True,
                segments=32,
                radius1=STUD_RADIUS,
                radius2=STUD_RADIUS,
                depth=STUD_HEIGHT,
                matrix=matrix,
            )
    return _finish_mesh(name, bm)


def holder_mesh(name: str, size_x: float, size_y: float, ridge_pitch: float) -> bpy.types.Mesh:
    """The scanner's holder: a plate whose top is z = 0, with low ridges across it that the parts sit between."""
    thickness, ridge_w, ridge_h = 0.006, 0.003, 0.0015
    bm = bmesh.new()
    plate = bmesh.ops.create_cube(bm, size=1.0)["verts"]
    bmesh.ops.scale(bm, vec=(size_x, size_y, thickness), verts=plate)
    bmesh.ops.translate(bm, vec=(0.0, 0.0, -thickness / 2), verts=plate)
    count = int(size_y / ridge_pitch)
    for k in range(count + 1):
        y = (k - count / 2) * ridge_pitch
        ridge = bmesh.ops.create_cube(bm, size=1.0)["verts"]
        bmesh.ops.scale(bm, vec=(size_x, ridge_w, ridge_h), verts=ridge)
        bmesh.ops.translate(bm, vec=(0.0, y, ridge_h / 2), verts=ridge)
    return _finish_mesh(name, bm)


def _import_objects(path: Path) -> list[bpy.types.Object]:
    """Import a part file and return its new mesh objects (not yet linked for .blend files)."""
    before = set(bpy.data.objects)
    suffix = path.suffix.lower()
    if suffix == ".stl":
        bpy.ops.wm.stl_import(filepath=str(path))
    elif suffix == ".obj":
        bpy.ops.wm.obj_import(filepath=str(path))
    elif suffix in (".glb", ".gltf"):
        bpy.ops.import_scene.gltf(filepath=str(path))
    elif suffix == ".blend":
        with bpy.data.libraries.load(str(path), link=False) as (source, target):
            target.objects = list(source.objects)
        for obj in target.objects:
            if obj is not None:
                bpy.context.scene.collection.objects.link(obj)
    else:
        raise ValueError(f"{path}: unsupported part file type {suffix!r}; use .stl, .obj, .glb/.gltf or .blend")
    meshes = [obj for obj in set(bpy.data.objects) - before if obj.type == "MESH"]
    if not meshes:
        raise ValueError(f"{path}: the file holds no mesh")
    return meshes


def _first_base_color(objects: list[bpy.types.Object]) -> tuple[float, float, float] | None:
    """The base colour of the first imported material (LDraw colours arrive as glTF materials)."""
    for obj in sorted(objects, key=lambda o: o.name):
        for slot in obj.material_slots:
            tree = slot.material.node_tree if slot.material else None
            bsdf = tree.nodes.get("Principled BSDF") if tree else None
            if bsdf is not None:
                return tuple(bsdf.inputs["Base Color"].default_value[:3])
    return None


def file_mesh(name: str, path: Path, scale: float, up_axis: str) -> tuple[bpy.types.Mesh, tuple | None]:
    """One mesh from a part file, scaled to metres, turned so `up_axis` points up and centred on its footprint.

    Args:
        path: .stl/.obj/.glb/.gltf/.blend file; all its meshes become one (a model renders as an assembly).
        scale: file units to metres (0.001 for millimetres).
        up_axis: the file's up axis after import, "z" or "y".

    Returns:
        The mesh and the base colour of its first material (None if it has none).
    """
    objects = _import_objects(path)
    color = _first_base_color(objects)
    bm = bmesh.new()
    for obj in sorted(objects, key=lambda o: o.name):
        part = bmesh.new()
        part.from_mesh(obj.data)
        part.transform(obj.matrix_world)
        mesh = bpy.data.meshes.new("tmp")
        part.to_mesh(mesh)
        part.free()
        bm.from_mesh(mesh)
        bpy.data.meshes.remove(mesh)
    for obj in objects:
        bpy.data.objects.remove(obj)
    if up_axis == "y":
        bm.transform(Matrix.Rotation(math.radians(90), 4, "X"))
    bm.transform(Matrix.Scale(scale, 4))
    xs, ys, zs = zip(*(v.co for v in bm.verts), strict=True)
    bmesh.ops.translate(bm, vec=(-(min(xs) + max(xs)) / 2, -(min(ys) + max(ys)) / 2, -min(zs)), verts=bm.verts)
    return _finish_mesh(name, bm), color
