"""The HTTP API and the web page (FastAPI: typed request bodies, an OpenAPI schema at
``/openapi.json`` and docs at ``/docs``, on Starlette's ASGI core; uvicorn serves it).

Every typed error becomes a JSON body ``{"error": {"type", "message"}}`` with its HTTP status
(``STATUS``); bodies over ``max_upload_bytes`` are cut off with 413 while they arrive."""
from __future__ import annotations

import contextlib
import time
from importlib import resources
from typing import List, Literal, Optional

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from .. import errors
from ..serialize import json_line
from .config import ServiceConfig
from .store import DocumentStore, Entry
from .uploads import document_id, parse_upload, text_document
from .worker import ModelWorker

# the HTTP status of each typed error (the first matching class wins)
STATUS = [
    (errors.UnknownDocumentError, 404),
    (errors.LimitExceededError, 413),
    (errors.DocumentTooLargeError, 413),
    (errors.UnsupportedFormatError, 415),
    (errors.ServiceBusyError, 503),
    (errors.DeviceUnavailableError, 503),
    (errors.EncryptedDocumentError, 422),
    (errors.DocumentReadError, 422),
    (errors.EmptyDocumentError, 422),
    (errors.ImageReadError, 422),
    (errors.ImageAnchorError, 422),
    (errors.EmptyQuestionError, 400),
    (errors.QuestionTooLongError, 400),
    (errors.InvalidOptionError, 400),
    (errors.LongreadError, 400),
]


# the page loads nothing from elsewhere: its own inline script and style, images from this service
CSP = ("default-src 'none'; connect-src 'self'; img-src 'self' blob:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")


def status_of(exc: Exception) -> int:
    for cls, code in STATUS:
        if isinstance(exc, cls):
            return code
    return 500


class SafeJSON(JSONResponse):
    """JSON that any client can parse line by line (see ``longread.serialize``)."""

    def render(self, content) -> bytes:
        return json_line(content).encode("utf-8")


def error_response(exc: Exception) -> SafeJSON:
    return SafeJSON({"error": {"type": type(exc).__name__, "message": str(exc)}}, status_code=status_of(exc))


class TextDocument(BaseModel):
    text: Optional[str] = Field(None, description="the document's text")
    pages: Optional[List[str]] = Field(None, description="or its pages, in order")
    name: str = Field("text", max_length=200, description="a name shown with the answers")


class AskRequest(BaseModel):
    questions: List[str] = Field(..., min_length=1, description="questions about the document")
    top_k: Optional[int] = Field(None, description="answers per question: the best and up to top_k - 1 others")
    max_answer_tokens: Optional[int] = None
    allow_no_answer: Optional[bool] = Field(None, description="may answer 'not in the document' (default: "
                                                              "the reader's setting)")
    read: Optional[Literal["auto", "all"]] = Field(
        None, description="auto: read the chunks ranked most relevant (coarse to fine); all: every chunk "
                          "(default: the reader's setting)")
    attention: bool = Field(False, description="also return each question's attention share per chunk")


class BodyLimit:
    """ASGI middleware: 413 as soon as a request body passes ``limit`` bytes (announced or not)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send):
        exc = errors.LimitExceededError(f"the request body is larger than this service's limit of "
                                        f"{self.limit:,} bytes (longread serve --max-upload-mb)")
        response = error_response(exc)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": response.body})


class _TooLarge(Exception):
    pass


def create_app(reader, config: Optional[ServiceConfig] = None) -> FastAPI:
    """The ASGI app serving ``reader`` (one model in memory, one worker thread for it)."""
    import longread

    config = config or ServiceConfig()
    store = DocumentStore(config.cache_bytes)
    worker = ModelWorker(config.max_pending)
    reader.progress = False
    reader._cache_size = 0                    # the store keeps the prepared documents, the reader none

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        worker.shutdown()

    app = FastAPI(title="longread", version=longread.__version__, default_response_class=SafeJSON, lifespan=lifespan,
                  description="Answers questions about long documents: each answer is an exact span of the "
                              "document, with its page, score and alternatives, or 'not in the document'.")
    app.state.store, app.state.worker, app.state.config, app.state.reader = store, worker, config, reader

    @app.exception_handler(errors.LongreadError)
    async def _typed(request: Request, exc: errors.LongreadError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        where = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return SafeJSON({"error": {"type": "BadRequest", "message": f"invalid request ({where})"}}, status_code=400)

    # ------------------------------------------------------------------ preparation (model thread)
    def prepare(entry: Entry, parse) -> None:
        try:
            entry.status, entry.stage = "preparing", "reading the document"
            document = parse()
            entry.stage = "tokenizing" + (" and reading images (OCR)" if document.images else "")
            prepared = reader.prepare(document)
            if prepared.num_tokens > config.max_document_tokens:
                raise errors.LimitExceededError(
                    f"the document has {prepared.num_tokens:,} tokens; this service takes at most "
                    f"{config.max_document_tokens:,} (longread serve --max-tokens)")
            entry.stage = f"encoding {prepared.num_tokens:,} tokens"
            reader.warm(prepared)
            entry.prepared, entry.status, entry.stage, entry.ready_at = prepared, "ready", "ready", time.time()
        except Exception as exc:                  # the entry says what went wrong; the client polls it
            entry.status, entry.stage, entry.ready_at = "failed", "failed", time.time()
            entry.error = {"type": type(exc).__name__, "message": str(exc), "status": status_of(exc)}
        finally:
            reader._cache.clear()
            store.account(entry)

    def start(doc_id: str, name: str, kind: str, parse) -> SafeJSON:
        entry, created = store.add(Entry(doc_id, name, kind))
        if created:
            worker.submit(prepare, entry, parse)
        return SafeJSON(entry.info(), status_code=202 if created else 200)

    # ------------------------------------------------------------------ routes
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        html = resources.files("longread.service").joinpath("page.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": CSP})

    @app.get("/v1/health")
    async def health():
        return {"status": "ok", "documents": len(store), "pending_jobs": worker.pending,
                "cache_bytes": store.used(), "cache_budget_bytes": config.cache_bytes}

    @app.get("/v1/version")
    async def version():
        import torch

        return {"longread": longread.__version__, "torch": torch.__version__, "device": str(reader.device),
                "dtype": str(reader.dtype).replace("torch.", ""), "no_answer": reader.config.no_answer}

    @app.post("/v1/documents", status_code=202)
    async def upload(file: UploadFile = File(..., description="PDF, HTML, Markdown, text or JSON {text|pages}"),
                     password: Optional[str] = Form(None, description="password of an encrypted PDF")):
        """Upload a document: its id (a content hash), status and, once prepared, pages and tokens.
        Long documents are prepared in the background: poll ``GET /v1/documents/{id}``."""
        data = await file.read()
        if not data:
            raise errors.EmptyDocumentError(f"{file.filename or 'the upload'} is empty; nothing to read")
        from .uploads import detect_kind

        kind = detect_kind(file.filename, data)
        name = (file.filename or "upload")[:200]
        return start(document_id(kind + (password or ""), data), name, kind,
                     lambda: parse_upload(file.filename, data, password)[1])

    @app.post("/v1/documents/text", status_code=202)
    async def upload_text(body: TextDocument):
        """A document given as JSON text or pages."""
        document = text_document(body.text, body.pages, body.name)       # checked now: 422 straight away
        data = json_line({"text": document.text, "pages": document.page_starts}).encode("utf-8", "surrogatepass")
        return start(document_id("text", data), body.name, "text", lambda: document)

    @app.get("/v1/documents/{doc_id}")
    async def info(doc_id: str):
        """Preparation status (queued, preparing, ready, failed) and, when ready, the document's size."""
        return store.get(doc_id).info()

    @app.delete("/v1/documents/{doc_id}")
    async def forget(doc_id: str):
        store.remove(doc_id)
        return {"deleted": doc_id}

    @app.post("/v1/documents/{doc_id}/ask")
    async def ask(doc_id: str, body: AskRequest):
        """Answers, one per question, as ``longread ask --json`` prints them."""
        entry = store.get(doc_id)
        if len(body.questions) > config.max_questions:
            raise errors.LimitExceededError(f"{len(body.questions)} questions in one request; at most "
                                            f"{config.max_questions}")
        for name in ("top_k", "max_answer_tokens"):
            value = getattr(body, name)
            if value is not None and value < 1:
                raise errors.InvalidOptionError(f"{name} must be a whole number >= 1, got {value}")

        def job():
            if entry.status != "ready":
                err = entry.error or {"type": "ServiceBusyError", "message": "the document is not prepared"}
                return err
            from ..chunk_attention import answer_with_attention

            opts = dict(top_k=body.top_k, max_answer_tokens=body.max_answer_tokens,
                        allow_no_answer=body.allow_no_answer, read=body.read)
            answers, weights = [], []
            for q in body.questions:
                if body.attention:
                    ans, w = answer_with_attention(reader, entry.prepared, q, **opts)
                    weights.append(None if w is None else [float(x) for x in w])
                else:
                    ans = reader.answer(entry.prepared, q, **opts)
                answers.append(ans.to_dict())
            store.account(entry)
            out = {"document": doc_id, "answers": answers}
            if body.attention:
                out["chunk_weights"] = weights
            return out

        result = await worker.run(job, timeout=config.request_timeout_s)
        if "answers" not in result:
            return SafeJSON({"error": {"type": result["type"], "message": result["message"]}},
                            status_code=result.get("status", 422))
        return result

    @app.get("/v1/documents/{doc_id}/evidence", response_class=HTMLResponse)
    async def evidence(doc_id: str, question: List[str] = Query(..., description="one or more questions")):
        """The evidence page: each answer highlighted in its passage, the alternatives, the
        attention per chunk (a self-contained HTML page; everything from the document escaped)."""
        entry = store.get(doc_id)
        if len(question) > config.max_questions:
            raise errors.LimitExceededError(f"{len(question)} questions; at most {config.max_questions}")

        def job():
            if entry.status != "ready":
                raise errors.ServiceBusyError("the document is not prepared: "
                                              + (entry.error or {}).get("message", entry.stage))
            from ..chunk_attention import answer_with_attention
            from ..evidence import evidence_html

            pairs = [answer_with_attention(reader, entry.prepared, q) for q in question]
            return evidence_html([a for a, _ in pairs], entry.prepared, [w for _, w in pairs], title=entry.name)

        return HTMLResponse(await worker.run(job, timeout=config.request_timeout_s))

    @app.get("/v1/documents/{doc_id}/images/{index}", responses={200: {"content": {"image/png": {}}}})
    async def image(doc_id: str, index: int):
        """An image of the document as longread read it (PNG; boxes in answers are in the original
        image's pixels: multiply by the image's ``scale`` from the document info)."""
        entry = store.get(doc_id)
        reading = entry.prepared.reading if entry.prepared is not None else None
        images = {im.index: im for im in (reading.images if reading is not None else [])}
        if index not in images:
            raise errors.UnknownDocumentError(f"document {doc_id!r} has no image {index}")
        return Response(images[index].png, media_type="image/png")

    app.add_middleware(BodyLimit, limit=config.max_upload_bytes)
    return app
