"""Images in documents: loading and validation, OCR text at the image's anchor, the patch
encoder and the gated cross-attention fusion."""
from .images import LoadedImage, load_images
from .reading import ReadingText, build_reading_text

__all__ = ["LoadedImage", "load_images", "ReadingText", "build_reading_text"]
