"""Image classification data, held on the training device as uint8 tensors.

Three datasets, from small to the paper's:

* ``digits`` -- scikit-learn's embedded 8x8 handwritten digits (1797 images,
  1 channel, 10 classes; no download). The 0..16 pixel values are rescaled to
  0..255. The train/test split is fixed: a stratified 1347/450 split,
  ``sklearn.model_selection.train_test_split(test_size=450, stratify=y,
  random_state=0)``.
* ``fashion-mnist`` -- Zalando's 28x28 grey-scale clothes (60000/10000), the
  official IDX ``.gz`` files, md5-verified.
* ``cifar10`` -- Krizhevsky's 32x32 colour images (50000/10000), the official
  python tarball, md5-verified and extracted safely (no member may leave the
  target folder; links and devices are refused).

Files are looked for, in this order, in ``data_dir`` (the CLI's
``--data-dir``), in ``$RESIDUALS_DATA``, and in the user cache
(``$XDG_CACHE_HOME/residuals``, else ``~/.cache/residuals``), each both in
``<root>/<dataset>/`` and in ``<root>/`` itself. Missing files are downloaded
into ``<first root>/<dataset>/``: to a temporary file, md5-checked, then
atomically renamed, so a bad or partial download never sits where a good file
is expected.

Images stay uint8 ``(N, C, H, W)`` on the device. :func:`normalize` and
:func:`random_crop_flip` are batched tensor operations on that device, run per
mini-batch by the trainer: no host round trip, no per-sample Python loop.

Modules: ``spec`` (what a dataset is), ``files`` (where files live, downloads), ``readers``
(the three formats and :data:`DATASETS`), ``images`` (:class:`ImageData`, :func:`load_dataset`),
``augment`` (batch transforms).
"""

from typing import TYPE_CHECKING

from residuals._lazy import lazy_exports

if TYPE_CHECKING:  # the exports, imported on first use (residuals._lazy)
    from residuals.data.augment import (
        AUGMENTATIONS,
        augment_batch,
        crop_padding,
        normalize,
        random_crop_flip,
        resize_images,
    )
    from residuals.data.files import data_roots, default_data_dir, fetch_url, md5sum
    from residuals.data.images import ImageData, load_dataset
    from residuals.data.readers import DATASETS, read_idx
    from residuals.data.spec import DatasetError, DatasetSpec, RemoteFile
    from residuals.device import (
        resolve_device,
    )  # its home is residuals.device; kept for old imports

__getattr__, __dir__, __all__ = lazy_exports(__name__, __file__)
