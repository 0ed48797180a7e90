"""Command line: ``longread ask FILE -q QUESTION [-q QUESTION ...] [--questions FILE] [--html OUT]`` and
``longread serve [--host 127.0.0.1] [--port 8000]``."""
from __future__ import annotations

import argparse
import os
import re
import sys
import unicodedata
from pathlib import Path
from typing import List

from .errors import CheckpointError, DeviceUnavailableError, DocumentTooLargeError, LongreadError
from .progress import progress_setting
from .serialize import json_line

EXIT_OK, EXIT_USAGE, EXIT_INPUT, EXIT_DEVICE, EXIT_OUTPUT = 0, 2, 3, 4, 5
EXIT_CODES = f"""exit codes:
  {EXIT_OK}  every question was answered
  {EXIT_USAGE}  bad command line (unknown option, no question, --top-k < 1, unknown --device)
  {EXIT_INPUT}  bad input: missing/unreadable/encrypted/corrupt/empty document, empty or too long question
  {EXIT_DEVICE}  device or model problem: CUDA absent, document too large for memory, bad checkpoint
  {EXIT_OUTPUT}  the --html page could not be written
  130 interrupted"""
CONTEXT_WORDS = 8


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def _device(value: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a device longread runs on (use cpu, cuda or cuda:N)")
    return value


def _visible(s: str) -> str:
    """``s`` with control, format and surrogate characters escaped (``\\x1b``): a document can
    never move the cursor, recolour or retitle the terminal it is printed to."""
    return "".join(repr(ch)[1:-1] if unicodedata.category(ch) in ("Cc", "Cf", "Cs") else ch for ch in s)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="longread", description="Answer questions about long documents.",
                                epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    ask = sub.add_parser("ask", help="answer questions about a document", epilog=EXIT_CODES,
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Answer questions about a document (.pdf, .html/.htm, .md, .txt).")
    ask.add_argument("file", help="document path (.pdf, .html, .htm, .md, .txt)")
    ask.add_argument("-q", "--question", action="append", default=[], help="a question (repeatable)")
    ask.add_argument("--questions", metavar="FILE", help="a file of questions, one per line ('-': stdin)")
    ask.add_argument("--top-k", type=_positive, default=3, help="answers per question: best + alternatives")
    ask.add_argument("--read", choices=("auto", "all"), default=None,
                     help="auto: on a long document read only the chunks ranked most relevant (coarse to fine); "
                          "all: read every chunk for every question (default: the reader's setting, auto)")
    ask.add_argument("--model", default=None, help="checkpoint directory or hub name (default: offline reader)")
    ask.add_argument("--fusion", metavar="FILE", default=None,
                     help="image fusion weights (fusion.safetensors) to attach: figures then inform the answers")
    ask.add_argument("--device", type=_device, default=None, help="cpu or cuda (default: cuda when available)")
    ask.add_argument("--password", default=None, help="password of an encrypted PDF")
    ask.add_argument("--json", action="store_true", help="print one JSON object per question")
    ask.add_argument("--html", metavar="OUT", help="write an evidence page (answers in their passages, "
                                                   "alternatives, attention per chunk) to OUT")
    ask.add_argument("--quiet", "--no-progress", dest="quiet", action="store_true", help="no progress bars")
    serve = sub.add_parser("serve", help="a local HTTP service and web page for asking questions of documents",
                           description="Serve the reader over HTTP: upload documents, ask questions, read the "
                                       "evidence. The web page is at the printed URL; the API's schema at /docs.")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it to the network)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--model", default=None, help="checkpoint directory (default: offline reader)")
    serve.add_argument("--device", type=_device, default=None, help="cpu or cuda (default: cuda when available)")
    serve.add_argument("--cache-mb", type=_positive, default=2048,
                       help="memory for prepared documents (least recently used ones are dropped past it)")
    serve.add_argument("--max-upload-mb", type=_positive, default=64, help="largest upload")
    serve.add_argument("--max-tokens", type=_positive, default=2_000_000, help="longest document, in tokens")
    serve.add_argument("--timeout", type=_positive, default=300, help="seconds a request may wait for the model")
    return p


def _questions(args, parser) -> List[str]:
    questions = list(args.question)
    if args.questions:
        try:
            lines = (sys.stdin.read() if args.questions == "-"
                     else Path(args.questions).read_text(encoding="utf-8-sig")).splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            parser.error(f"cannot read the questions file {args.questions}: {exc}")
        questions += [line.strip() for line in lines if line.strip()]
    if not questions:
        parser.error("no question: give -q QUESTION or --questions FILE")
    return questions


def _load(args):
    from .formats import load_pdf

    return args.file if args.password is None else load_pdf(args.file, password=args.password)


def _print_text(ans, question: str) -> None:
    print(f"Q: {_visible(question)}")
    if ans.no_answer:
        print(f"  no answer found in the document (score {ans.no_answer_score:.3f}); best guess:")
    for rank, a in enumerate([ans] + list(ans.alternatives), 1):
        before = "".join(re.findall(r"\S+\s*", a.context[: a.start - a.context_start])[-CONTEXT_WORDS:])
        after = "".join(re.findall(r"\s*\S+", a.context[a.end - a.context_start:])[:CONTEXT_WORDS])
        before, shown, after = (_visible(re.sub(r"\s+", " ", part)) for part in (before, a.text, after))
        print(f"  {rank}. {_visible(repr(a.text))}  (score {a.score:.3f}, page {a.page}, chars {a.start}-{a.end})")
        print(f"     ...{before}[{shown}]{after}...")


def main(argv=None) -> int:
    for stream in (sys.stdout, sys.stderr):       # a terminal or pipe that cannot show a character
        if hasattr(stream, "reconfigure"):        # gets an escape, never a UnicodeEncodeError
            stream.reconfigure(errors="backslashreplace")
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        quiet_libraries()
        return _serve(args)
    questions = _questions(args, parser)
    quiet_libraries()
    try:
        with progress_setting(False if args.quiet else None):
            return _ask(args, questions)
    except KeyboardInterrupt:
        print("longread: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:                       # `longread ask ... | head`: the reader went away
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())     # no second error when Python flushes stdout at exit
        return EXIT_OK


def _serve(args) -> int:
    import uvicorn

    from .reader import Reader
    from .service import ServiceConfig, create_app

    try:
        reader = Reader.from_pretrained(args.model, device=args.device)
    except LongreadError as exc:
        print(f"longread: {exc}", file=sys.stderr)
        return EXIT_DEVICE
    config = ServiceConfig(max_upload_bytes=args.max_upload_mb << 20, max_document_tokens=args.max_tokens,
                           cache_bytes=args.cache_mb << 20, request_timeout_s=float(args.timeout))
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"longread: serving on http://{host}:{args.port}/ (API schema: /docs; Ctrl-C stops)", file=sys.stderr)
    try:
        uvicorn.run(create_app(reader, config), host=args.host, port=args.port, log_level="warning")
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"longread: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def quiet_libraries() -> None:
    """Silence progress bars and notices of libraries longread uses (transformers' weight-loading
    bar, its advisory warnings); longread's own progress bars are unaffected."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def _ask(args, questions: List[str]) -> int:
    from .chunk_attention import answer_with_attention
    from .reader import Reader

    try:
        reader = Reader.from_pretrained(args.model, device=args.device, fusion=args.fusion)
        doc = reader.prepare(_load(args))
        answers, weights = [], []
        for question in questions:
            if args.html:            # the evidence page also shows which chunks were attended to
                ans, w = answer_with_attention(reader, doc, question, top_k=args.top_k, read=args.read)
            else:
                ans, w = reader.answer(doc, question, top_k=args.top_k, read=args.read), None
            answers.append(ans)
            weights.append(w)
            if args.json:
                print(json_line(ans.to_dict()), flush=True)
            else:
                _print_text(ans, question)
    except (DeviceUnavailableError, CheckpointError, DocumentTooLargeError) as exc:
        print(f"longread: {exc}", file=sys.stderr)
        return EXIT_DEVICE
    except LongreadError as exc:
        print(f"longread: {exc}", file=sys.stderr)
        return EXIT_INPUT
    if args.html:
        from .evidence import write_evidence_html

        try:
            write_evidence_html(answers, doc, args.html, chunk_weights=weights)
        except OSError as exc:
            print(f"longread: cannot write {args.html}: {exc.strerror or exc}; choose a writable path",
                  file=sys.stderr)
            return EXIT_OUTPUT
        print(f"evidence page: {args.html}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
