"""``longread serve``: a local HTTP service (FastAPI on uvicorn) and a web page for asking
questions of one's own documents.

    from longread.service import ServiceConfig, create_app
    app = create_app(reader, ServiceConfig(cache_bytes=2 << 30))
"""
from .app import create_app
from .config import ServiceConfig

__all__ = ["create_app", "ServiceConfig"]
