"""longread: long-document reading comprehension.

    import longread
    ans = longread.answer(text, question="Who wrote it?")
    ans.text == text[ans.start:ans.end]
"""
from .hub_kernels import import_hub_kernels

import_hub_kernels()                    # before anything imports transformers

from .api import answer, default_reader  # noqa: E402
from .document import Document, DocumentImage, load_document  # noqa: E402
from .errors import (CheckpointError, DeviceUnavailableError, DocumentReadError, DocumentTooLargeError,  # noqa: E402
                     EmptyDocumentError, EmptyQuestionError, LongreadError, QuestionTooLongError)
from .errors import ImageAnchorError, ImageReadError, InvalidOptionError, OCRUnavailableError  # noqa: E402
from .model import EncoderConfig, LongReaderModel, QAOutput  # noqa: E402
from .reader import Answer, PreparedDocument, Reader, ReaderConfig  # noqa: E402

__version__ = "0.1.0"

__all__ = ["answer", "default_reader", "Reader", "ReaderConfig", "Answer", "PreparedDocument", "Document",
           "load_document", "EncoderConfig", "LongReaderModel", "QAOutput", "LongreadError",
           "EmptyDocumentError", "EmptyQuestionError", "QuestionTooLongError", "DocumentReadError",
           "DocumentTooLargeError", "DeviceUnavailableError", "CheckpointError", "DocumentImage", "ImageReadError",
           "ImageAnchorError", "OCRUnavailableError", "InvalidOptionError"]
