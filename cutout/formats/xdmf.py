"""``xdmf``: the XDMF (v2) sidecar that lets ParaView, VisIt and VTK open a cutout's HDF5 file.

The one XDMF dialect of the service: synchronous cutouts and jobs both write it (by ElementTree, so
names are XML-escaped).

Uniform cutouts use a ``3DCoRectMesh`` with ``ORIGIN_DXDYDZ`` (values in z, y, x order, as XDMF 2
expects); cutouts with a non-uniform axis (channel y) use a ``3DRectMesh`` with ``VXVYVZ`` pointing at the
``x``, ``y``, ``z`` coordinate datasets. Several times become a temporal collection whose grids read
hyperslabs of the ([time,] z, y, x, component) datasets; each grid is named ``t<stored time index>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from labservice.cutout.formats.registry import Format, register
from labservice.cutout.layout import BlockSource, CutoutLayout
from labservice.cutout.region import CutoutPlan
from labservice.errors import InvalidInput

# XDMF attribute types by number of components; others are written one scalar per component.
ATTRIBUTE_TYPES = {1: "Scalar", 3: "Vector", 6: "Tensor6", 9: "Tensor"}


def _dims(shape: tuple[int, ...]) -> str:
    return " ".join(str(int(s)) for s in shape)


def _hdf_item(parent: ET.Element, h5_name: str, dataset: str, shape: tuple[int, ...], precision: int) -> None:
    item = ET.SubElement(
        parent,
        "DataItem",
        Dimensions=_dims(shape),
        NumberType="Float",
        Precision=str(precision),
        Format="HDF",
    )
    item.text = f"{h5_name}:/{dataset}"


def _slab(
    parent: ET.Element,
    h5_name: str,
    layout: CutoutLayout,
    plan: CutoutPlan,
    ti: int | None,
    comp: int | None,
) -> None:
    """A HyperSlab item picking one time and/or one component out of a variable's dataset."""
    full = layout.shape(plan)
    nz, ny, nx, ncomp = plan.shape
    start = ([ti] if ti is not None else []) + [0, 0, 0, comp or 0]
    count = ([1] if ti is not None else []) + [nz, ny, nx, 1 if comp is not None else ncomp]
    out = (nz, ny, nx) if comp is not None else (nz, ny, nx, ncomp)
    slab = ET.SubElement(parent, "DataItem", ItemType="HyperSlab", Dimensions=_dims(out), Type="HyperSlab")
    sel = ET.SubElement(slab, "DataItem", Dimensions=f"3 {len(full)}", Format="XML")
    stride = [1] * len(full)
    sel.text = "  ".join(" ".join(map(str, row)) for row in (start, stride, count))
    _hdf_item(slab, h5_name, plan.variable, full, 4)


def _mesh(grid: ET.Element, layout: CutoutLayout, h5_name: str) -> None:
    nz, ny, nx = layout.spatial_shape
    spacing = [layout.uniform_spacing(a) for a in ("z", "y", "x")]
    if all(s is not None for s in spacing):
        ET.SubElement(grid, "Topology", TopologyType="3DCoRectMesh", Dimensions=_dims((nz, ny, nx)))
        geo = ET.SubElement(grid, "Geometry", GeometryType="ORIGIN_DXDYDZ")
        origin = ET.SubElement(
            geo, "DataItem", Dimensions="3", NumberType="Float", Precision="8", Format="XML"
        )
        origin.text = " ".join(repr(float(layout.coords(a)[0])) for a in ("z", "y", "x"))
        step = ET.SubElement(geo, "DataItem", Dimensions="3", NumberType="Float", Precision="8", Format="XML")
        step.text = " ".join(repr(float(s)) for s in spacing)  # type: ignore[arg-type]
        return
    ET.SubElement(grid, "Topology", TopologyType="3DRectMesh", Dimensions=_dims((nz, ny, nx)))
    geo = ET.SubElement(grid, "Geometry", GeometryType="VXVYVZ")
    for a in ("x", "y", "z"):
        _hdf_item(geo, h5_name, a, (layout.coords(a).size,), 8)


def _attributes(grid: ET.Element, layout: CutoutLayout, h5_name: str, ti: int | None) -> None:
    for plan in layout.plans:
        ncomp = len(plan.components)
        kind = ATTRIBUTE_TYPES.get(ncomp)
        if kind is not None:
            attr = ET.SubElement(grid, "Attribute", Name=plan.variable, AttributeType=kind, Center="Node")
            if ti is None:
                _hdf_item(attr, h5_name, plan.variable, layout.shape(plan), 4)
            else:
                _slab(attr, h5_name, layout, plan, ti, None)
            continue
        for c, comp in enumerate(plan.components):
            attr = ET.SubElement(
                grid, "Attribute", Name=f"{plan.variable}_{comp}", AttributeType="Scalar", Center="Node"
            )
            _slab(attr, h5_name, layout, plan, ti, c)


def xdmf_text(layout: CutoutLayout, h5_name: str) -> str:
    """The XDMF document for a cutout stored in the HDF5 file ``h5_name`` (a name relative to the .xmf).

    Parameters
    ----------
    layout : CutoutLayout
        The cutout's layout, as written to the HDF5 file.
    h5_name : str
        File name of the HDF5 file, as the XDMF reader should find it next to the .xmf.

    Returns
    -------
    str
        The XML text.
    """
    root = ET.Element("Xdmf", Version="2.0")
    domain = ET.SubElement(root, "Domain")
    name = f"{layout.region.dataset}"
    if not layout.time_axis:
        grid = ET.SubElement(domain, "Grid", Name=name, GridType="Uniform")
        _mesh(grid, layout, h5_name)
        ET.SubElement(grid, "Time", Value=repr(float(layout.times[0])))
        _attributes(grid, layout, h5_name, None)
    else:
        series = ET.SubElement(domain, "Grid", Name=name, GridType="Collection", CollectionType="Temporal")
        for ti, t in enumerate(layout.times):
            grid = ET.SubElement(series, "Grid", Name=f"t{layout.t_indices[ti]}", GridType="Uniform")
            ET.SubElement(grid, "Time", Value=repr(float(t)))
            _mesh(grid, layout, h5_name)
            _attributes(grid, layout, h5_name, ti)
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" ?>\n<!DOCTYPE Xdmf SYSTEM "Xdmf.dtd" []>\n' + body + "\n"


def _encode(source: BlockSource, stem: str) -> Iterator[bytes]:
    yield xdmf_text(source.layout, f"{stem}.h5").encode()


def _write(source: BlockSource, path: Path) -> list[Path]:
    raise InvalidInput("xdmf is a sidecar: write format 'hdf5' (it writes the .xmf too) or 'zip'")


FORMAT = register(
    Format(
        "xdmf",
        "application/xml",
        ".xmf",
        "xdmf (the XDMF sidecar of the hdf5 file)",
        write=_write,
        encode=_encode,
        aliases=("xmf",),
        sidecar_of="hdf5",
        order=30,
    )
)
