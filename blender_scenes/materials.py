"""Shaders: moulded plastic with surface texture and 3D defects, the holder, and the mask switch.

Every material ends in a Mix Shader whose factor is the node "mask_mode": 0 renders the photograph, 1 renders the
masks as emission (red = part, green = defect), so both come from the same geometry and the same defect fields.
Defects are capsules in the part's object space (metres): they stick to the surface and follow it over edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import bpy

MASK_NODE = "mask_mode"


@dataclass
class Defect:
    """One defect: a capsule from a to b with radius (metres, object space) and how it changes the surface."""

    kind: str
    a: tuple[float, float, float]
    b: tuple[float, float, float]
    radius: float
    color_gain: float  # relative change of the albedo inside (-0.9 = almost black)
    depth: float  # metres the surface sinks at the centre line (bump only)
    roughness_gain: float
    wave: tuple[float, float, float] = (0.0, 0.0, 0.0)  # flow lines: direction / wavelength, else zero


class _Graph:
    """Small helper around a node tree: math nodes by operation, links by socket."""

    def __init__(self, material: bpy.types.Material):
        self.nodes = material.node_tree.nodes
        self.links = material.node_tree.links
        self.nodes.clear()

    def node(self, kind: str, **props):
        node = self.nodes.new(kind)
        for key, value in props.items():
            setattr(node, key, value)
        return node

    def link(self, out, into):
        self.links.new(out, into)

    def math(self, operation: str, a, b=None, c=None, clamp: bool = False):
        """A scalar Math node; arguments are sockets or numbers."""
        node = self.node("ShaderNodeMath", operation=operation, use_clamp=clamp)
        for index, value in enumerate((a, b, c)):
            if value is None:
                continue
            if isinstance(value, int | float):
                node.inputs[index].default_value = value
            else:
                self.link(value, node.inputs[index])
        return node.outputs[0]

    def vmath(self, operation: str, a, b=None, scale=None):
        """A Vector Math node; returns the node (outputs 'Vector' and 'Value')."""
        node = self.node("ShaderNodeVectorMath", operation=operation)
        for index, value in enumerate((a, b)):
            if value is None:
                continue
            if isinstance(value, tuple):
                node.inputs[index].default_value = value
            else:
                self.link(value, node.inputs[index])
        if scale is not None:
            if isinstance(scale, int | float):
                node.inputs[3].default_value = scale
            else:
                self.link(scale, node.inputs[3])
        return node

    def noise(self, vector, scale: float, detail: float):
        node = self.node("ShaderNodeTexNoise")
        node.inputs["Scale"].default_value = scale
        node.inputs["Detail"].default_value = detail
        self.link(vector, node.inputs["Vector"])
        return node.outputs["Factor"]

    def finish(self, surface, mask_color, mask_value: float = 0.0) -> None:
        """Output = mix(surface, emission(mask_color)) by the mask switch."""
        switch = self.node("ShaderNodeValue", name=MASK_NODE, label=MASK_NODE)
        switch.outputs[0].default_value = mask_value
        emission = self.node("ShaderNodeEmission")
        emission.inputs["Strength"].default_value = 1.0
        if isinstance(mask_color, tuple):
            emission.inputs["Color"].default_value = (*mask_color, 1.0)
        else:
            self.link(mask_color, emission.inputs["Color"])
        mix = self.node("ShaderNodeMixShader")
        self.link(switch.outputs[0], mix.inputs["Fac"])
        self.link(surface, mix.inputs[1])
        self.link(emission.outputs[0], mix.inputs[2])
        output = self.node("ShaderNodeOutputMaterial")
        self.link(mix.outputs[0], output.inputs["Surface"])


def _defect_fields(graph: _Graph, position, defect: Defect):
    """(inside 0/1, colour gain, height in metres, roughness gain) sockets of one defect at object position p."""
    a, b = defect.a, defect.b
    ab = tuple(bj - aj for aj, bj in zip(a, b, strict=True))
    length2 = sum(v * v for v in ab)
    pa = graph.vmath("SUBTRACT", position, a).outputs["Vector"]
    if length2 > 0:
        t = graph.math(
            "MULTIPLY", graph.vmath("DOT_PRODUCT", pa, tuple(v / length2 for v in ab)).outputs["Value"], 1.0, clamp=True
        )
        along = graph.vmath("SCALE", ab, scale=t).outputs["Vector"]
        distance = graph.vmath("DISTANCE", pa, along).outputs["Value"]
    else:
        distance = graph.vmath("LENGTH", pa).outputs["Value"]
    inside = graph.math("LESS_THAN", distance, defect.radius)
    profile = graph.math("MULTIPLY_ADD", distance, -1.0 / defect.radius, 1.0, clamp=True)  # 1 on the axis, 0 at the rim
    gain = graph.math("MULTIPLY", inside, defect.color_gain)
    if any(defect.wave):
        phase = graph.vmath("DOT_PRODUCT", pa, defect.wave).outputs["Value"]
        gain = graph.math("MULTIPLY", gain, graph.math("SINE", graph.math("MULTIPLY", phase, 6.283185307)))
    height = graph.math("MULTIPLY", profile, -defect.depth)
    roughness = graph.math("MULTIPLY", inside, defect.roughness_gain)
    return inside, gain, height, roughness


def plastic_material(
    name: str,
    look: dict,
    defects: list[Defect],
    is_part: bool,
) -> bpy.types.Material:
    """Moulded plastic.

    Args:
        look: profile "material" keys: color (albedo 0-1), roughness, texture_m (bump amplitude, metres),
            texture_scale (1/m), color_variation (relative), specular (IOR level).
        defects: capsules drawn into this part (object space).
        is_part: whether the object counts in the object mask (the defect-indicator brick does not).
    """
    material = bpy.data.materials.new(name)
    graph = _Graph(material)
    position = graph.node("ShaderNodeTexCoord").outputs["Object"]
    scale = look["texture_scale"]
    grain = graph.noise(position, scale, 6.0)
    fine = graph.noise(position, scale * 6.0, 2.0)
    height = graph.math("MULTIPLY_ADD", grain, look["texture_m"], graph.math("MULTIPLY", fine, look["texture_m"] * 0.5))
    albedo = graph.math(
        "MULTIPLY_ADD",
        graph.noise(position, scale * 0.25, 3.0),
        look["color_variation"],
        1.0 - look["color_variation"] / 2,
    )
    roughness = graph.math("ADD", look["roughness"], 0.0)
    mask_defect = None
    gains = []
    for defect in defects:
        inside, gain, depth, rough_gain = _defect_fields(graph, position, defect)
        mask_defect = inside if mask_defect is None else graph.math("MAXIMUM", mask_defect, inside)
        gains.append(gain)
        height = graph.math("ADD", height, depth)
        roughness = graph.math("ADD", roughness, rough_gain)
    for gain in gains:
        albedo = graph.math("MULTIPLY", albedo, graph.math("ADD", gain, 1.0))
    color = graph.math("MULTIPLY", albedo, look["color"], clamp=True)
    bsdf = graph.node("ShaderNodeBsdfPrincipled")
    graph.link(color, bsdf.inputs["Base Color"])
    graph.link(graph.math("MINIMUM", roughness, 1.0), bsdf.inputs["Roughness"])
    bsdf.inputs["Specular IOR Level"].default_value = look["specular"]
    bump = graph.node("ShaderNodeBump")
    bump.inputs["Strength"].default_value = 1.0
    bump.inputs["Distance"].default_value = 1.0
    graph.link(height, bump.inputs["Height"])
    graph.link(bump.outputs["Normal"], bsdf.inputs["Normal"])
    combine = graph.node("ShaderNodeCombineColor")
    combine.inputs["Red"].default_value = 1.0 if is_part else 0.0
    if mask_defect is not None and is_part:
        graph.link(mask_defect, combine.inputs["Green"])
    graph.finish(bsdf.outputs[0], combine.outputs[0])
    return material


def holder_material(name: str, look: dict) -> bpy.types.Material:
    """The dark, slightly glossy holder plate; black in the mask pass."""
    material = bpy.data.materials.new(name)
    graph = _Graph(material)
    position = graph.node("ShaderNodeTexCoord").outputs["Object"]
    bsdf = graph.node("ShaderNodeBsdfPrincipled")
    variation = graph.math("MULTIPLY_ADD", graph.noise(position, 120.0, 4.0), look["color"] * 0.6, look["color"] * 0.7)
    graph.link(variation, bsdf.inputs["Base Color"])
    bsdf.inputs["Roughness"].default_value = look["roughness"]
    graph.finish(bsdf.outputs[0], (0.0, 0.0, 0.0))
    return material


def set_mask_mode(on: bool) -> None:
    """Switch every material between the photograph (False) and the mask emission (True)."""
    for material in bpy.data.materials:
        if material.node_tree is not None and MASK_NODE in material.node_tree.nodes:
            material.node_tree.nodes[MASK_NODE].outputs[0].default_value = 1.0 if on else 0.0
