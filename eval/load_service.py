"""Load benchmark of ``longread serve``, on loopback only: the service runs in this process
(uvicorn on 127.0.0.1, an ephemeral port), the clients are threads with their own HTTP
connections.

    python eval/load_service.py --clients 8 --seconds 60 --out docs/results/load_service.json

1. Side by side: one question at a time on a prepared ``--doc-tokens`` document, through the API
   and through ``Reader.answer`` on the same reader (same process, same machine): latency ratio.
2. Load: ``--clients`` clients ask random questions of ``--docs`` documents for ``--seconds``
   seconds (bounded: each client stops at the deadline). Reported: p50/p95/p99 latency,
   throughput, errors (must be 0), answers differing from the sequential answer of the same
   question (must be 0), the cache's bytes against its budget and the process's peak RSS.
"""
from __future__ import annotations

import argparse
import random
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import _proc_status_kb, environment, load_wiki, markdown_table, report  # noqa: E402

QUESTIONS = ["Where was the author born?", "When was it founded?", "Who discovered it?", "What is it made of?",
             "How large is it?", "Why did it fail?", "Which city is the capital?", "What did the study find?"]


def haystack(wiki, tokenizer, tokens: int, seed: int) -> str:
    """Real Wikipedia lead sections joined until the text has about ``tokens`` tokens."""
    rng = random.Random(seed)
    entries = [w["extract"] for w in wiki.values() if len(w.get("extract", "")) > 400]
    rng.shuffle(entries)
    parts, n = [], 0
    for text in entries:
        parts.append(text)
        n += len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if n >= tokens:
            break
    return "\n\n".join(parts)


def percentile(values, q):
    values = sorted(values)
    if not values:
        return None
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--model", default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--doc-tokens", type=int, default=100_000, help="document of the side-by-side comparison")
    p.add_argument("--side-questions", type=int, default=3)
    p.add_argument("--docs", type=int, default=3, help="documents of the load phase")
    p.add_argument("--load-doc-tokens", type=int, default=4000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--cache-mb", type=int, default=2048)
    p.add_argument("--out", default="results/load_service.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import httpx
    import uvicorn

    from longread import Reader
    from longread.service import ServiceConfig, create_app

    reader = Reader.from_pretrained(args.model)
    reader.progress = False
    wiki = load_wiki(Path(args.data_dir) / "wiki" / "summaries_en.json")
    big = haystack(wiki, reader.tokenizer, args.doc_tokens, seed=0)
    small = [haystack(wiki, reader.tokenizer, args.load_doc_tokens, seed=1 + i) for i in range(args.docs)]

    config = ServiceConfig(cache_bytes=args.cache_mb << 20, request_timeout_s=600)
    app = create_app(reader, config)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, timeout=900)
    for _ in range(200):
        try:
            client.get("/v1/health")
            break
        except httpx.HTTPError:
            time.sleep(0.05)

    def upload(text: str, name: str) -> str:
        doc_id = client.post("/v1/documents", files={"file": (name, text.encode("utf-8"))}).json()["id"]
        while client.get(f"/v1/documents/{doc_id}").json()["status"] in ("queued", "preparing"):
            time.sleep(0.2)
        return doc_id

    # ---- 1. side by side on the big document (the service and the direct calls never overlap)
    t0 = time.perf_counter()
    big_id = upload(big, "big.txt")
    prepare_s = time.perf_counter() - t0
    entry = app.state.store.get(big_id)
    questions = QUESTIONS[:args.side_questions]
    side = []
    for q in questions:
        t = time.perf_counter()
        api = client.post(f"/v1/documents/{big_id}/ask", json={"questions": [q]}).json()["answers"][0]
        api_s = time.perf_counter() - t
        t = time.perf_counter()
        direct = reader.answer(entry.prepared, q)
        direct_s = time.perf_counter() - t
        side.append({"question": q, "api_s": api_s, "reader_s": direct_s, "ratio": api_s / direct_s,
                     "same_answer": (api["start"], api["end"]) == (direct.start, direct.end)})
    app.state.store.remove(big_id)

    # ---- 2. load
    ids = [upload(text, f"doc{i}.txt") for i, text in enumerate(small)]
    reference = {(d, q): client.post(f"/v1/documents/{d}/ask", json={"questions": [q]}).json()["answers"][0]
                 for d in ids for q in QUESTIONS}
    latencies, errors, differing, cache_peak = [], [], 0, 0
    lock = threading.Lock()
    deadline = time.perf_counter() + args.seconds

    def run_client(k: int):
        nonlocal differing, cache_peak
        rng = random.Random(k)
        with httpx.Client(base_url=base, timeout=900) as c:
            while time.perf_counter() < deadline:
                d, q = rng.choice(ids), rng.choice(QUESTIONS)
                t = time.perf_counter()
                try:
                    res = c.post(f"/v1/documents/{d}/ask", json={"questions": [q]})
                    ok = res.status_code == 200
                    body = res.json()
                except httpx.HTTPError as exc:
                    ok, body = False, {"error": str(exc)}
                dt = time.perf_counter() - t
                with lock:
                    if not ok:
                        errors.append(body)
                        continue
                    latencies.append(dt)
                    a, ref = body["answers"][0], reference[(d, q)]
                    differing += (a["start"], a["end"], a["text"]) != (ref["start"], ref["end"], ref["text"])
                    cache_peak = max(cache_peak, app.state.store.used())

    t_load = time.perf_counter()
    workers = [threading.Thread(target=run_client, args=(k,)) for k in range(args.clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t_load
    server.should_exit = True

    load = {"clients": args.clients, "seconds": round(wall, 1), "requests": len(latencies), "errors": len(errors),
            "error_samples": errors[:3], "differing_answers": differing,
            "throughput_per_s": len(latencies) / wall,
            "p50_s": percentile(latencies, 50), "p95_s": percentile(latencies, 95), "p99_s": percentile(latencies, 99),
            "mean_s": statistics.mean(latencies) if latencies else None,
            "cache_peak_bytes": cache_peak, "cache_budget_bytes": config.cache_bytes,
            "peak_rss_bytes": (_proc_status_kb("VmHWM") or 0) * 1024}
    env = environment(reader.device, "eval/load_service.py", argv)
    ratio = statistics.median(r["ratio"] for r in side)
    md = [f"# Service load ({env['cpu_model']}, {args.threads} torch threads, {env['date'][:10]})", "",
          f"Side by side on a prepared {args.doc_tokens:,}-token document (prepared through the API in "
          f"{prepare_s:.1f} s): median API / Reader.answer latency ratio **{ratio:.3f}**.", "",
          markdown_table(["question", "API s", "Reader.answer s", "ratio", "same answer"],
                         [[r["question"], r["api_s"], r["reader_s"], r["ratio"], r["same_answer"]] for r in side]),
          "", f"Load: {args.clients} clients for {args.seconds:g} s over {args.docs} documents of about "
              f"{args.load_doc_tokens:,} tokens.", "",
          markdown_table(["requests", "errors", "differing answers", "throughput /s", "p50 s", "p95 s", "p99 s",
                          "cache peak MiB", "cache budget MiB", "peak RSS MiB"],
                         [[load["requests"], load["errors"], differing, load["throughput_per_s"], load["p50_s"],
                           load["p95_s"], load["p99_s"], cache_peak / 2**20, config.cache_bytes / 2**20,
                           load["peak_rss_bytes"] / 2**20 if load["peak_rss_bytes"] else None]])]
    report(args.out, {"environment": env, "args": vars(args), "prepare_s": prepare_s, "side_by_side": side,
                      "median_ratio": ratio, "load": load}, "\n".join(md))


if __name__ == "__main__":
    main()
