"""Imagery: the one home for reading remote-sensing images, below storage, the model layer, bot, server and UI.

It imports nothing from the project. `imagery.probe` reads any file's header without decoding (TIFFs through
rasterio, the rest through Pillow); `imagery.header` checks a header against the pixel limit and its decode budget
(width x height x bands x bytes per sample), raising `ImageTooLarge`; `imagery.geotiff` reads every TIFF a
remote-sensing user has (rasterio / GDAL), checking first. `model_adapter.images` (any input -> safe RGB image)
calls them and re-exports `ImageError` under its old path. See docs/imagery.md.
"""

from imagery.errors import ImageError
from imagery.header import ImageTooLarge

__all__ = ["ImageError", "ImageTooLarge"]
