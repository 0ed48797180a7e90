"""Typed errors: each says what was wrong and what to do about it."""


class LongreadError(Exception):
    """Base class of every error longread raises on purpose."""


class EmptyDocumentError(LongreadError, ValueError):
    """The document has no readable text."""


class EmptyQuestionError(LongreadError, ValueError):
    """The question is empty or only whitespace."""


class QuestionTooLongError(LongreadError, ValueError):
    """The question has more tokens than the model's question budget."""


class DocumentReadError(LongreadError, OSError):
    """A document path that does not exist, cannot be read, or has an unsupported format."""


class DocumentTooLargeError(LongreadError, MemoryError):
    """The document does not fit the device; the message says how much memory it needs."""


class DeviceUnavailableError(LongreadError, RuntimeError):
    """A device was requested that this machine does not have (e.g. CUDA without a GPU)."""


class CheckpointError(LongreadError, ValueError):
    """A checkpoint that cannot be found, read or mapped onto the engine."""


class ImageReadError(LongreadError, ValueError):
    """An image that cannot be read: missing file, corrupt or truncated data, unknown format."""


class ImageAnchorError(LongreadError, ValueError):
    """An image anchored outside the document (a character offset or page that does not exist)."""


class OCRUnavailableError(LongreadError, ImportError):
    """Text in images was requested but the OCR engine (rapidocr-onnxruntime) is not installed."""


class EncryptedDocumentError(DocumentReadError):
    """A password-protected document that cannot be opened without its password."""


class ShardingError(LongreadError, ValueError):
    """A document that cannot be split over the requested number of processes."""


class BatchInputError(LongreadError, ValueError):
    """A batch input file (JSONL) with a malformed line; the message names the line."""


class FusionLayerError(LongreadError, ValueError):
    """Image fusion requested after a layer that cannot take it (not the last question-free layer
    or a question-aware layer)."""


class InvalidOptionError(LongreadError, ValueError):
    """An option with a value it cannot take (e.g. ``top_k=0``); the message names the valid range."""


class ImageTooLargeError(ImageReadError):
    """An image whose header declares more pixels than the safe limit; it is refused before it is decoded."""


class ImageSkippedWarning(UserWarning):
    """An image left out of a document, or read without its text (too large, unreadable, outside the
    document's folder, too thin to hold text); the message names the image and says why."""


class UnsupportedFormatError(DocumentReadError):
    """A document of a type longread does not read (it reads PDF, HTML, Markdown and plain text)."""


class LimitExceededError(LongreadError, ValueError):
    """An input over a configured limit (upload bytes, document tokens, questions per request)."""


class UnknownDocumentError(LongreadError, KeyError):
    """A document id the service does not hold (never uploaded, or evicted from its cache)."""

    def __str__(self) -> str:          # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ServiceBusyError(LongreadError, RuntimeError):
    """The service cannot take the request now (queue full, timed out, or out of memory); retry later."""
