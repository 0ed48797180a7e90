"""``longread serve``: the HTTP API through the ASGI test client (upload, ask, cache reuse, every
error status, concurrent requests answering as sequential ones), and the web page in headless
Chromium when one is installed. A tiny random reader stands in for the default one: the answers
are compared with ``Reader.answer`` on the same document, not judged for quality."""
from __future__ import annotations

import io
import json
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from _helpers import chromium
from _tiny_reader import build_tiny_checkpoint

from longread import Reader
from longread.service import ServiceConfig, create_app

httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

TEXT = ("Galileo Galilei was born in Pisa in 1564. He improved the telescope and observed the moons of "
        "Jupiter. <script>alert('x')</script> Marie Curie was born in Warsaw and discovered polonium and radium. ")
QUESTIONS = ["Where was Galileo born?", "What did Curie discover?", "What did Galileo observe?"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(1)
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_service"))


def make_client(tiny, **limits):
    reader = Reader.from_pretrained(tiny, device="cpu", dtype=torch.float32, top_k=3)
    return TestClient(create_app(reader, ServiceConfig(**limits))), reader


@pytest.fixture(scope="module")
def service(tiny):
    client, reader = make_client(tiny)
    with client:
        yield client, reader


def upload(client, data: bytes, name: str = "doc.txt", **kw):
    res = client.post("/v1/documents", files={"file": (name, io.BytesIO(data))}, **kw)
    return res


def wait_ready(client, doc_id: str, timeout: float = 60.0) -> dict:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        info = client.get(f"/v1/documents/{doc_id}").json()
        if info["status"] in ("ready", "failed"):
            return info
        time.sleep(0.05)
    raise AssertionError(f"{doc_id} not prepared in {timeout} s")


def expected(reader, text, question, **opts):
    return reader.answer(text, question, **opts).to_dict()


def test_upload_ask_and_cache_reuse(service):
    client, reader = service
    res = upload(client, TEXT.encode())
    assert res.status_code in (200, 202)
    doc_id = res.json()["id"]
    info = wait_ready(client, doc_id)
    assert info["status"] == "ready" and info["tokens"] > 10 and info["pages"] == 1
    again = upload(client, TEXT.encode(), name="copy.txt")
    assert again.status_code == 200 and again.json()["id"] == doc_id            # same content, same entry
    body = client.post(f"/v1/documents/{doc_id}/ask", json={"questions": QUESTIONS, "top_k": 3}).json()
    assert [a["question"] for a in body["answers"]] == QUESTIONS
    for a, q in zip(body["answers"], QUESTIONS):
        ref = expected(reader, TEXT, q, top_k=3)
        assert (a["text"], a["start"], a["end"]) == (ref["text"], ref["start"], ref["end"])
        assert a["score"] == pytest.approx(ref["score"], rel=1e-5)
        assert TEXT[a["start"]:a["end"]] == a["text"]
    att = client.post(f"/v1/documents/{doc_id}/ask", json={"questions": QUESTIONS[:1], "attention": True}).json()
    assert len(att["chunk_weights"][0]) == info["chunks"]


def test_text_json_upload_and_pages(service):
    client, reader = service
    pages = ["The bridge opened in 1779.", "Abraham Darby paid for the bridge."]
    res = client.post("/v1/documents/text", json={"pages": pages, "name": "bridge"})
    assert res.status_code in (200, 202)
    info = wait_ready(client, res.json()["id"])
    assert info["pages"] == 2
    a = client.post(f"/v1/documents/{info['id']}/ask", json={"questions": ["Who paid?"]}).json()["answers"][0]
    ref = expected(reader, pages, "Who paid?")
    assert (a["start"], a["end"], a["page"]) == (ref["start"], ref["end"], ref["page"])


@pytest.mark.parametrize("request_kind, status", [
    ("empty question", 400), ("top_k zero", 400), ("not json", 400), ("unknown id", 404),
    ("too many questions", 413), ("binary upload", 415), ("empty upload", 422), ("whitespace document", 422),
    ("corrupt pdf", 422), ("both text and pages", 422)])
def test_error_statuses(service, request_kind, status):
    client, _ = service
    doc_id = upload(client, TEXT.encode()).json()["id"]
    wait_ready(client, doc_id)
    ask = f"/v1/documents/{doc_id}/ask"
    res = {
        "empty question": lambda: client.post(ask, json={"questions": ["   "]}),
        "top_k zero": lambda: client.post(ask, json={"questions": ["Who?"], "top_k": 0}),
        "not json": lambda: client.post(ask, content=b"{not json", headers={"content-type": "application/json"}),
        "unknown id": lambda: client.post("/v1/documents/0123/ask", json={"questions": ["Who?"]}),
        "too many questions": lambda: client.post(ask, json={"questions": ["Who?"] * 33}),
        "binary upload": lambda: upload(client, bytes(range(256)) * 4, name="tool.exe"),
        "empty upload": lambda: upload(client, b""),
        "whitespace document": lambda: client.post("/v1/documents/text", json={"text": "  \n "}),
        "corrupt pdf": lambda: _failed(client, upload(client, b"%PDF-1.4\n garbage", name="x.pdf")),
        "both text and pages": lambda: client.post("/v1/documents/text", json={"text": "a", "pages": ["b"]}),
    }[request_kind]()
    assert res.status_code == status, res.text
    err = res.json()["error"]
    assert err["type"] and err["message"]


def _failed(client, res):
    """A document whose preparation fails: its status says why, and asking it gives that status."""
    doc_id = res.json()["id"]
    info = wait_ready(client, doc_id)
    assert info["status"] == "failed" and info["error"]["message"]
    return client.post(f"/v1/documents/{doc_id}/ask", json={"questions": ["Who?"]})


def test_limits_upload_bytes_tokens_and_busy(tiny):
    client, _ = make_client(tiny, max_upload_bytes=2000, max_document_tokens=60)
    with client:
        res = upload(client, b"word " * 1000)
        assert res.status_code == 413 and "larger than" in res.json()["error"]["message"]
        res = upload(client, ("many words here " * 60).encode())
        info = wait_ready(client, res.json()["id"])
        assert info["status"] == "failed" and info["error"]["status"] == 413
    client, _ = make_client(tiny, max_pending=0)
    with client:
        res = client.post("/v1/documents/text", json={"text": TEXT})
        assert res.status_code == 503


def test_concurrent_clients_answer_as_sequential(service):
    client, reader = service
    docs = [TEXT, TEXT.replace("Pisa", "Florence") * 3]
    ids = [upload(client, d.encode(), name=f"d{i}.txt").json()["id"] for i, d in enumerate(docs)]
    for i in ids:
        wait_ready(client, i)
    ref = {(i, q): expected(reader, d, q) for i, d in zip(ids, docs) for q in QUESTIONS}
    jobs = [(i, q) for _ in range(4) for i in ids for q in QUESTIONS]

    def ask(job):
        i, q = job
        return job, client.post(f"/v1/documents/{i}/ask", json={"questions": [q]}).json()["answers"][0]

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(ask, jobs))
    for job, a in results:
        assert (a["text"], a["start"], a["end"]) == (ref[job]["text"], ref[job]["start"], ref[job]["end"])
        assert a["score"] == pytest.approx(ref[job]["score"], rel=1e-5)


def test_evidence_page_escapes_the_document(service):
    client, _ = service
    doc_id = upload(client, TEXT.encode()).json()["id"]
    wait_ready(client, doc_id)
    res = client.get(f"/v1/documents/{doc_id}/evidence", params={"question": QUESTIONS[:2]})
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
    assert "<script>alert" not in res.text and "&lt;script&gt;alert" in res.text


def test_html_upload_never_reads_server_files(service, tmp_path):
    client, _ = service
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"not for clients")
    page = (f"<html><body><p>Galileo was born in Pisa.</p><img src='{secret}'><img src='file://{secret}'>"
            "<img src='/proc/self/environ'><img src='../../etc/passwd'><img src='http://example.com/x.png'>"
            "</body></html>").encode()
    info = wait_ready(client, upload(client, page, name="page.html").json()["id"])
    assert info["status"] == "ready" and info["images"] == []


def test_schema_health_version_and_page(service):
    client, _ = service
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/v1/documents", "/v1/documents/text", "/v1/documents/{doc_id}", "/v1/documents/{doc_id}/ask",
              "/v1/documents/{doc_id}/evidence", "/v1/health", "/v1/version"):
        assert p in paths
    assert client.get("/v1/health").json()["status"] == "ok"
    assert client.get("/v1/version").json()["longread"]
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text        # nothing from elsewhere


def test_cache_stays_within_its_budget(tiny):
    client, _ = make_client(tiny, cache_bytes=400_000)
    with client:
        ids = []
        for i in range(6):
            ids.append(upload(client, (TEXT * 20 + f" Document {i}.").encode(), name=f"{i}.txt").json()["id"])
            wait_ready(client, ids[-1])
            health = client.get("/v1/health").json()
            assert health["cache_bytes"] <= 400_000 or health["documents"] == 1
        assert client.get(f"/v1/documents/{ids[-1]}").status_code == 200
        assert client.get(f"/v1/documents/{ids[0]}").status_code == 404                  # evicted


# ------------------------------------------------------------------ a real browser


def test_page_in_headless_chromium_shows_the_highlighted_answer(tiny, tmp_path):
    browser = chromium()
    bs4 = pytest.importorskip("bs4")
    import uvicorn

    reader = Reader.from_pretrained(tiny, device="cpu", dtype=torch.float32, top_k=3)
    app = create_app(reader, ServiceConfig())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(base + "/v1/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        doc_id = httpx.post(base + "/v1/documents", files={"file": ("doc.txt", TEXT.encode())}).json()["id"]
        for _ in range(300):
            if httpx.get(f"{base}/v1/documents/{doc_id}").json()["status"] == "ready":
                break
            time.sleep(0.1)
        api = httpx.post(f"{base}/v1/documents/{doc_id}/ask", json={"questions": [QUESTIONS[0]], "top_k": 3}).json()
        out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000",
                              "--dump-dom", f"{base}/?doc={doc_id}&q={QUESTIONS[0].replace(' ', '%20')}"],
                             capture_output=True, text=True, timeout=120)
        soup = bs4.BeautifulSoup(out.stdout, "html.parser")
        mark = soup.find("mark", class_="answer")
        assert mark is not None, out.stdout[-2000:]
        a = api["answers"][0]
        assert mark.get_text() == a["text"] and int(mark["data-start"]) == a["start"]
        assert soup.find(string=lambda s: s and "Q: " + QUESTIONS[0] in s)
        assert not soup.find("script", src=True)
        json.dumps(a)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
