"""Command line: ``longread ask FILE -q QUESTION [-q QUESTION ...]``.

Exit codes: 0 answered; 2 bad command line; 3 bad input (document, question); 4 device or
checkpoint problem.
"""
from __future__ import annotations

import argparse
import json
import sys

from .errors import CheckpointError, DeviceUnavailableError, DocumentTooLargeError, LongreadError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="longread", description="Answer questions about long documents.")
    sub = p.add_subparsers(dest="command", required=True)
    ask = sub.add_parser("ask", help="answer questions about a .txt or .md file")
    ask.add_argument("file", help="document path (.txt, .md)")
    ask.add_argument("-q", "--question", action="append", required=True, help="a question (repeatable)")
    ask.add_argument("--top-k", type=int, default=3, help="answers to show per question (best + alternatives)")
    ask.add_argument("--model", default=None, help="checkpoint directory or hub name (default: offline reader)")
    ask.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    ask.add_argument("--json", action="store_true", help="print JSON lines instead of text")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from .reader import Reader

    try:
        reader = Reader.from_pretrained(args.model, device=args.device)
        doc = reader.prepare(args.file)
        for question in args.question:
            ans = reader.answer(doc, question=question, top_k=args.top_k)
            if args.json:
                print(json.dumps(ans.to_dict(), ensure_ascii=False))
                continue
            print(f"Q: {question}")
            for rank, a in enumerate([ans] + ans.alternatives, 1):
                before = a.context[: a.start - a.context_start].replace("\n", " ")[-60:]
                after = a.context[a.end - a.context_start:].replace("\n", " ")[:60]
                print(f"  {rank}. {a.text!r}  (score {a.score:.3f}, page {a.page}, chars {a.start}-{a.end})")
                print(f"     ...{before}[{a.text}]{after}...")
    except (DeviceUnavailableError, CheckpointError, DocumentTooLargeError) as exc:
        print(f"longread: {exc}", file=sys.stderr)
        return 4
    except (LongreadError, TypeError, NotImplementedError) as exc:
        print(f"longread: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
