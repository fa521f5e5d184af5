"""Imagery: the one home for reading remote-sensing images, below storage, the model layer, bot, server and UI.

It imports nothing from the project. Today it holds the GeoTIFF reader (`imagery.geotiff`: every TIFF a
remote-sensing user has, through rasterio / GDAL) and the shared `ImageError`; `model_adapter.images` (any input
-> safe RGB image) calls it for TIFFs and re-exports `ImageError` under its old path.
"""

from imagery.errors import ImageError

__all__ = ["ImageError"]
