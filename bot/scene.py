"""How the remote-sensing agent describes an image to its planner: a short bilingual text of the metadata that
`imagery.probe.read_metadata` reads from the file's header (size, bands, sample type, GeoTIFF georeferencing).

The image operations themselves live in `imagery/`: metadata and georeferencing in `imagery.probe` /
`imagery.geotiff`, boxes and tile grids in `imagery.tiles`. This module only words them for the chat.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def describe_metadata(meta: Mapping[str, Any]) -> str:
    """A short bilingual description of `read_metadata`'s result for a planner to read."""
    lines = [f"图像 image: {meta.get('format') or '?'} {meta['width']}×{meta['height']} px, "
             f"{meta.get('bands', 3)} 波段 bands ({meta.get('mode')}), {meta.get('bytes', 0):,} bytes"]
    geo = meta.get("geo")
    if geo:
        sx, sy = geo["pixel_size"]
        minx, miny, maxx, maxy = geo["bounds"]
        lines.append(f"地理参考 georeferenced: CRS {geo['crs'] or 'unknown'}, 像元大小 pixel size {sx:g}×{sy:g}, "
                     f"范围 bounds [{minx:.6g}, {miny:.6g}, {maxx:.6g}, {maxy:.6g}]")
    else:
        lines.append("无地理参考 not georeferenced")
    return "\n".join(lines)
