"""Reading and writing images with their geometry.

The contract is nnU-Net's: a reader returns the array *and* a
:class:`Geometry`; a writer takes that same geometry back, so spacing, origin,
direction and (for NIfTI) the exact header with its qform and sform survive a
load -> infer -> write round trip.

Array conventions
-----------------
* 3D volumes: ``(X, Y, Z)`` or ``(X, Y, Z, C)`` in voxel index order ``(i, j, k)``,
  with ``Geometry.affine`` mapping ``(i, j, k, 1)`` to RAS millimetres (the
  nibabel / MONAI convention). SimpleITK's LPS geometry is converted on read
  and back on write.
* 2D images: ``(H, W)`` or ``(H, W, C)``, row-major, exactly as stored.

Modules
-------
* :mod:`medseg.io.files`: extensions, slices of a 2D volume, DICOM folders, atomic writes;
* :mod:`medseg.io.geometry`: :class:`Geometry`;
* :mod:`medseg.io.images`: 2D images;
* :mod:`medseg.io.volumes`: NIfTI, NRRD and MetaImage volumes (DICOM series through :mod:`medseg.io.dicom`).
"""

from medseg.io.dicom import DICOM_TAGS
from medseg.io.files import (
    IMAGE_2D_EXTS,
    TEMP_MARK,
    VOLUME_EXTS,
    atomic_write,
    file_ext,
    is_dicom_dir,
    slice_neighbours,
    stale_temp_files,
    strip_ext,
    volume_slices,
)
from medseg.io.geometry import LPS_TO_RAS, Geometry
from medseg.io.images import (
    EXIF_ORIENTATION,
    MAX_IMAGE_PIXELS,
    MAX_PIXELS_ENV,
    exif_orientation,
    geometry_2d,
    max_image_pixels,
    read_image_2d,
    write_image_2d,
)
from medseg.io.volumes import GZIP_MAX_RATIO, read_volume, write_volume

__all__ = [
    "DICOM_TAGS",
    "EXIF_ORIENTATION",
    "GZIP_MAX_RATIO",
    "IMAGE_2D_EXTS",
    "LPS_TO_RAS",
    "MAX_IMAGE_PIXELS",
    "MAX_PIXELS_ENV",
    "TEMP_MARK",
    "VOLUME_EXTS",
    "Geometry",
    "atomic_write",
    "exif_orientation",
    "file_ext",
    "geometry_2d",
    "is_dicom_dir",
    "max_image_pixels",
    "read_image_2d",
    "read_volume",
    "slice_neighbours",
    "stale_temp_files",
    "strip_ext",
    "volume_slices",
    "write_image_2d",
    "write_volume",
]
