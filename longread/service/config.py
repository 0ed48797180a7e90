"""The service's limits, all configurable from ``longread serve``."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServiceConfig:
    max_upload_bytes: int = 64 << 20        # a larger request body is refused with 413
    max_document_tokens: int = 2_000_000    # a document with more tokens: 413
    cache_bytes: int = 2 << 30              # prepared documents kept (LRU) under this estimate
    request_timeout_s: float = 300.0        # a question not answered by then: 503
    max_pending: int = 64                   # jobs waiting for the model; more: 503
    max_questions: int = 32                 # questions in one request; more: 413
