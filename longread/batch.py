"""Answer many questions over many documents, resumably: ``python -m longread.batch``.

Input (JSONL), one line per document, with exactly one of ``path`` / ``text`` / ``pages``::

    {"id": "report-1", "path": "docs/report.txt", "questions": ["Who built it?", {"id": "q2", "question": "When?"}]}
    {"id": "memo", "text": "The full text ...", "questions": ["..."]}
    {"pages": ["page one ...", "page two ..."], "questions": ["..."]}

A relative ``path`` is read from the input file's folder. ``id`` defaults to the line number and a
question's id to its position in the list; give explicit ids if the input may be reordered.

Output (JSONL), one line per question, in input order::

    {"doc_id": ..., "question_id": ..., "question": ..., "answer": ..., "start": ..., "end": ...,
     "score": ..., "page": ..., "chunk": ..., "no_answer": ..., "no_answer_score": ...,
     "alternatives": [{"answer", "start", "end", "score"}, ...]}

or ``"error"`` / ``"error_type"`` instead of the answer when the document or the question is
unusable (unreadable file, empty document, empty or too long question, or any other failure,
which is also reported on stderr): one bad document never stops the batch, and such lines count
as done. An output file that holds anything but these lines is refused, never overwritten.

Data parallelism: ``torchrun --nproc-per-node N -m longread.batch --input ... --output ...``.
Documents are dealt to the ranks round robin; rank r appends each answer to
``OUTPUT.rank<r>.part`` and flushes and fsyncs it, so a crash loses nothing already answered. A
rerun skips every (doc_id, question_id) found in the output or any part file (whatever the
number of ranks then), and at the end rank 0 merges everything into OUTPUT (atomic rename) and
deletes the part files.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

import torch

from .document import Document, load_document
from .errors import BatchInputError, LongreadError
from .serialize import json_line

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
Key = Tuple[str, str]


def read_input(path: Path) -> List[dict]:
    """Parse the input JSONL: [{"id", "source": ("path" | "text" | "pages", value), "questions": [(id, text)]}]."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchInputError(f"cannot read the batch input {path}: {exc}") from exc
    docs, seen = [], set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BatchInputError(f"{where}: not valid JSON ({exc.msg}); write one JSON object per line") from exc
        doc = _parse_document(item, where, str(number))
        if doc["id"] in seen:
            raise BatchInputError(f"{where}: document id {doc['id']!r} is used twice; ids must be unique")
        seen.add(doc["id"])
        docs.append({**doc, "base": path.parent})
    return docs


def _parse_document(item, where: str, default_id: str) -> dict:
    if not isinstance(item, dict):
        raise BatchInputError(f"{where}: expected a JSON object with a document and its questions")
    sources = [k for k in ("path", "text", "pages") if k in item]
    if len(sources) != 1:
        raise BatchInputError(f"{where}: give exactly one of \"path\", \"text\" or \"pages\" (found {sources})")
    kind, value = sources[0], item[sources[0]]
    if not (isinstance(value, str) or kind == "pages" and isinstance(value, list)
            and all(isinstance(p, str) for p in value)):
        raise BatchInputError(f"{where}: \"{kind}\" must be "
                              + ("a list of page strings" if kind == "pages" else "a string"))
    questions = item.get("questions")
    if not isinstance(questions, list) or not questions:
        raise BatchInputError(f"{where}: \"questions\" must be a non-empty list of strings or "
                              f"{{\"id\", \"question\"}} objects")
    parsed = []
    for i, q in enumerate(questions):
        if isinstance(q, dict) and isinstance(q.get("question"), str):
            parsed.append((str(q.get("id", i)), q["question"]))
        elif isinstance(q, str):
            parsed.append((str(i), q))
        else:
            raise BatchInputError(f"{where}: question {i} must be a string or {{\"id\", \"question\"}}, got {q!r}")
    if len({qid for qid, _ in parsed}) != len(parsed):
        raise BatchInputError(f"{where}: two questions share an id; question ids must be unique per document")
    return {"id": str(item.get("id", default_id)), "source": (kind, value), "questions": parsed}


def load_source(doc: dict) -> Document:
    kind, value = doc["source"]
    if kind == "path":
        return load_document(Path(doc["base"], value))
    if kind == "text":
        return load_document(Document(text=value))
    return load_document(value)


def read_records(path: Path) -> Iterator[dict]:
    """The complete JSON lines of an output or part file (a line cut short by a crash is skipped).
    A file holding anything else (another program's JSON, text) is a BatchInputError: it is never
    overwritten."""
    if not path.exists():
        return
    try:
        f = open(path, encoding="utf-8")
    except OSError as exc:
        raise BatchInputError(f"cannot read the output file {path}: {exc.strerror or exc}") from exc
    with f:
        for number, line in enumerate(f, 1):
            if not line.endswith("\n"):
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not (isinstance(record, dict) and isinstance(record.get("doc_id"), str)
                    and isinstance(record.get("question_id"), str)):
                raise BatchInputError(f"{path} line {number} is not an answer written by longread.batch; "
                                      "choose another --output (or delete that file) so it is not overwritten")
            yield record


def part_files(output: Path) -> List[Path]:
    return sorted(output.parent.glob(output.name + ".rank*.part"))


def done_keys(output: Path) -> Set[Key]:
    return {(r["doc_id"], r["question_id"]) for p in [output] + part_files(output) for r in read_records(p)}


def open_part(path: Path):
    """Open a part file for appending, first dropping a trailing line cut short by a crash."""
    if path.exists():
        data = path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep != len(data):
            with open(path, "r+b") as f:
                f.truncate(keep)
    return open(path, "a", encoding="utf-8")


def answer_record(reader, prepared, doc_id: str, qid: str, question: str, top_k: Optional[int]) -> dict:
    record = {"doc_id": doc_id, "question_id": qid, "question": question}
    try:
        a = reader.answer(prepared, question, top_k=top_k)
    except Exception as exc:                  # one bad question never stops the batch
        return {**record, **_error(exc, f"document {doc_id!r}, question {qid!r}")}
    alts = [{"answer": b.text, "start": b.start, "end": b.end, "score": b.score} for b in a.alternatives]
    return {**record, "answer": a.text, "start": a.start, "end": a.end, "score": a.score, "page": a.page,
            "chunk": a.chunk, "no_answer": a.no_answer, "no_answer_score": a.no_answer_score, "alternatives": alts}


def _error(exc: Exception, where: str) -> dict:
    """The error fields of an output line. A typed longread error is the input's fault; anything
    else is reported on stderr with its traceback too, and the batch carries on."""
    if not isinstance(exc, LongreadError):
        import traceback

        print(f"longread.batch: unexpected error on {where}, recorded and skipped:", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)
    return {"error": str(exc) or type(exc).__name__, "error_type": type(exc).__name__}


def answer_shard(reader, docs: List[dict], part: Path, done: Set[Key], top_k: Optional[int] = None,
                 max_items: Optional[int] = None) -> int:
    """Answer the pending questions of ``docs``, one fsynced JSON line each. Returns how many."""
    written = 0
    with open_part(part) as out:
        for doc in docs:
            pending = [(qid, q) for qid, q in doc["questions"] if (doc["id"], qid) not in done]
            if not pending:
                continue
            try:
                prepared = reader.prepare(load_source(doc))
            except Exception as exc:          # one bad document never stops the batch
                prepared, error = None, _error(exc, f"document {doc['id']!r}")
            for qid, question in pending:
                if max_items is not None and written >= max_items:
                    return written
                record = (answer_record(reader, prepared, doc["id"], qid, question, top_k) if prepared is not None
                          else {"doc_id": doc["id"], "question_id": qid, "question": question, **error})
                out.write(json_line(record) + "\n")
                out.flush()
                os.fsync(out.fileno())
                written += 1
    return written


def merge_outputs(output: Path, docs: List[dict]) -> Tuple[int, int]:
    """Merge the output and every part file into ``output`` in input order (first record of a key
    wins), atomically, then delete the parts. Returns (questions answered, questions in input)."""
    records: Dict[Key, dict] = {}
    parts = part_files(output)
    for p in [output] + parts:
        for r in read_records(p):
            records.setdefault((r["doc_id"], r["question_id"]), r)
    order = [(d["id"], qid) for d in docs for qid, _ in d["questions"]]
    keys = [k for k in order if k in records] + [k for k in records if k not in set(order)]
    tmp = output.with_name(output.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for k in keys:
            f.write(json_line(records[k]) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, output)
    for p in parts:
        p.unlink()
    return sum(k in records for k in order), len(order)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m longread.batch", description=__doc__.split("\n\n")[0],
                                epilog="Many processes: torchrun --nproc-per-node N -m longread.batch ...")
    p.add_argument("--input", required=True, type=Path, help="JSONL: one document and its questions per line")
    p.add_argument("--output", required=True, type=Path, help="JSONL answers (merged at the end of the run)")
    p.add_argument("--model", default=None, help="checkpoint directory (default: the offline reader)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda:LOCAL_RANK when available)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: the device's default")
    p.add_argument("--top-k", type=int, default=None, help="answers per question: best + alternatives")
    p.add_argument("--max-items", type=int, default=None,
                   help="stop after answering this many questions on each rank (a partial run; rerun to go on)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.output.resolve() == args.input.resolve():
            raise BatchInputError(f"--output {args.output} is the input file; write the answers to another file")
        docs = read_input(args.input)
        done = done_keys(args.output)
    except BatchInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    distributed = world > 1
    if distributed:
        import torch.distributed as dist

        dist.init_process_group("gloo", timeout=timedelta(days=7))   # only a barrier before the merge
    device = args.device
    if device is None and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    from .reader import Reader

    reader = Reader.from_pretrained(args.model, device=device, dtype=DTYPES.get(args.dtype))
    reader.progress = False
    args.output.parent.mkdir(parents=True, exist_ok=True)
    written = answer_shard(reader, docs[rank::world], args.output.with_name(f"{args.output.name}.rank{rank}.part"),
                           done, args.top_k, args.max_items)
    print(f"rank {rank}: answered {written} questions", file=sys.stderr)
    if distributed:
        dist.barrier()
    if rank == 0:
        answered, total = merge_outputs(args.output, docs)
        print(f"{args.output}: {answered} of {total} questions answered", file=sys.stderr)
    if distributed:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
