"""longread: long-document reading comprehension.

    import longread
    ans = longread.answer(text, question="Who wrote it?")
    ans.text == text[ans.start:ans.end]
"""
from .api import answer, default_reader
from .document import Document, DocumentImage, load_document
from .errors import (CheckpointError, DeviceUnavailableError, DocumentReadError, DocumentTooLargeError,
                     EmptyDocumentError, EmptyQuestionError, LongreadError, QuestionTooLongError)
from .errors import ImageAnchorError, ImageReadError, InvalidOptionError, OCRUnavailableError
from .model import EncoderConfig, LongReaderModel, QAOutput
from .reader import Answer, PreparedDocument, Reader, ReaderConfig

__version__ = "0.1.0"

__all__ = ["answer", "default_reader", "Reader", "ReaderConfig", "Answer", "PreparedDocument", "Document",
           "load_document", "EncoderConfig", "LongReaderModel", "QAOutput", "LongreadError",
           "EmptyDocumentError", "EmptyQuestionError", "QuestionTooLongError", "DocumentReadError",
           "DocumentTooLargeError", "DeviceUnavailableError", "CheckpointError", "DocumentImage", "ImageReadError",
           "ImageAnchorError", "OCRUnavailableError", "InvalidOptionError"]
