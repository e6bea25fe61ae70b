"""Images coming into a duplex session: a private copy when pushed, validation when the dispatcher takes them.

`DuplexSession.push_image` takes a still image or a video frame as the processor does (a PIL image, a path, bytes, a
numpy array or a torch tensor). The caller's thread only copies it (`copy_frame`: the caller may reuse an array or
tensor buffer for the next frame); the dispatcher then decodes and checks it with the processor's own loader
(`checked_frame`: a missing or truncated file, NaN pixels, a 0x0 image or an unreadable array raise `ValueError`
naming what was found and what was expected) and keeps the decoded 8-bit RGB image. So a bad image is reported once as
an `error` event and never enters the visual context, where it would fail every later turn, and the frames the model
sees are the ones that were checked (a file changed or deleted later changes nothing).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

try:  # Hub remote code: a checkpoint folder holds processing_vita's files beside these
    from .image_processing_vita import load_image
except ImportError:  # this project's source tree: processing_vita is a sibling package
    from processing_vita.image_processing_vita import load_image

logger = logging.getLogger(__name__)


def copy_frame(image: Any) -> Any:
    """What `push_image` queues: arrays and tensors copied (the caller may reuse them), anything else as given."""
    if isinstance(image, np.ndarray):
        return image.copy()
    if hasattr(image, "detach") and hasattr(image, "clone"):  # a torch tensor, without importing torch here
        return image.detach().clone()
    return image


def checked_frame(image: Any, index: int = 0) -> Any:
    """`image` decoded to the 8-bit RGB PIL image the processor would tile; `ValueError` when it cannot be.

    `index` numbers the image in the message (the session passes how many images were pushed before it).
    """
    try:
        rgb = load_image(image, index)
    except ValueError:
        raise
    except Exception as error:  # PIL's DecompressionBombError, a tensor on a device numpy cannot read, ...
        raise ValueError(
            f"Image {index} ({type(image).__name__}) cannot be decoded ({type(error).__name__}: {error}); expected a "
            "readable image"
        ) from error
    if rgb.width < 1 or rgb.height < 1:
        raise ValueError(f"Image {index} is {rgb.width}x{rgb.height} pixels; expected at least 1x1")
    return rgb


__all__ = ["checked_frame", "copy_frame"]
