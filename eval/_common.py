"""Helpers shared by the evaluation scripts in ``eval/``: environment record, peak-memory
measurement, SQuAD-JSON loading, reader loading and the JSON + markdown writers.

Not part of the installed package: the scripts import it from their own folder.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"        # ../shared/data from the project root


# ----------------------------------------------------------------------------- environment
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def command_line(script: str, argv: Optional[Sequence[str]]) -> str:
    args = sys.argv[1:] if argv is None else list(argv)
    return " ".join(shlex.quote(a) for a in ["python", script, *args])


def environment(device: torch.device, script: str, argv: Optional[Sequence[str]]) -> dict:
    import transformers

    import longread

    env = {
        "device": str(device),
        "device_name": device_name(device),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "longread_version": getattr(longread, "__version__", "?"),
        "python_version": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command_line(script, argv),
    }
    try:
        env["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return env


# ----------------------------------------------------------------------------- memory
def _proc_status_kb(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _release_freed_memory() -> None:
    """Return freed heap pages to the OS (glibc ``malloc_trim``) so that the RSS at the start of a
    measurement is live memory, not what an earlier measurement left in the allocator."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory over a ``with`` block.

    CUDA: ``torch.cuda.max_memory_allocated`` (reset at entry); ``extra_mb`` is the peak minus
    what was allocated at entry. CPU: the process's peak RSS (``VmHWM`` of /proc/self/status,
    reset at entry by writing 5 to /proc/self/clear_refs, so it covers this block only, after
    freed heap pages are handed back with malloc_trim); ``extra_mb`` is that peak minus the RSS
    at entry: the block's own working memory, beside the models already loaded. (tracemalloc
    does not see torch's allocations, and psutil has no peak RSS on Linux.) Where the peak
    cannot be reset, the reported peak is the process's lifetime peak and ``reset`` is False.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda max_memory_allocated" if device.type == "cuda" else "cpu peak RSS (VmHWM)"
        self.peak_mb: Optional[float] = None
        self.extra_mb: Optional[float] = None
        self.reset = False

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            self.reset = True
        else:
            _release_freed_memory()
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self.reset = True
            except OSError:
                self.reset = False
            self._start = (_proc_status_kb("VmRSS") or 0) * 1024
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = (_proc_status_kb("VmHWM") or 0) * 1024
        self.peak_mb = peak / 2**20
        self.extra_mb = max(0, peak - self._start) / 2**20
        return False


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0

    def __enter__(self):
        sync(self.device)
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.seconds = time.perf_counter() - self._t
        return False


# ----------------------------------------------------------------------------- data
def load_squad(path, unanswerable: bool = False) -> List[dict]:
    """SQuAD JSON -> list of documents ``{title, context, qas: [{id, question, answers}]}``
    (one per paragraph; COVID-QA has one paragraph = one whole article). ``unanswerable``: keep
    questions without an answer too (``answers == []``)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    docs = []
    for a, article in enumerate(data["data"]):
        for p, para in enumerate(article["paragraphs"]):
            qas = []
            for qa in para["qas"]:
                golds = [ans["text"] for ans in qa.get("answers", []) if ans.get("text", "").strip()]
                if qa.get("is_impossible"):
                    golds = []
                if not golds and not unanswerable:
                    continue
                qas.append({"id": str(qa.get("id", f"{a}-{p}-{len(qas)}")), "question": qa["question"],
                            "answers": golds})
            docs.append({"title": article.get("title") or f"article {a}", "article": a, "paragraph": p,
                         "context": para["context"], "qas": qas})
    return docs


def load_wiki(path) -> Dict[str, dict]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, list):
        data = {d["title"]: d for d in data}
    return data


def norm_title(title: str) -> str:
    return title.replace("_", " ").strip().lower()


# ----------------------------------------------------------------------------- reader
def parse_dtype(name: Optional[str]) -> Optional[torch.dtype]:
    if name in (None, "", "auto"):
        return None
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise SystemExit(f"unknown --dtype {name!r}; use one of auto, {', '.join(table)}")
    return table[name]


def load_reader(model: Optional[str], device=None, dtype=None):
    """``Reader.from_pretrained(model)``; a clear exit when the default reader is not there yet."""
    from longread.reader import DEFAULT_MODEL_DIR, Reader

    if model is None and not (DEFAULT_MODEL_DIR / "longread_config.json").exists():
        raise SystemExit(f"the default reader is not in {DEFAULT_MODEL_DIR} (not trained yet?); "
                         "pass --model DIR (a longread or Hugging Face BERT checkpoint directory)")
    return Reader.from_pretrained(model, device=device, dtype=dtype)


def reader_from_args(args):
    """The reader a script's ``--model/--device/--dtype/--threads`` arguments ask for (torch's
    thread count set first, when given)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    return load_reader(args.model, device=args.device, dtype=parse_dtype(args.dtype))


def reader_description(reader, model_arg: Optional[str]) -> dict:
    from dataclasses import asdict

    return {
        "model": model_arg or "default (longread/default_model)",
        "dtype": str(reader.dtype).replace("torch.", ""),
        "encoder": reader.model.config.to_dict(),
        "reader": asdict(reader.config),
        "parameters": sum(p.numel() for p in reader.model.parameters()),
    }


# ----------------------------------------------------------------------------- output
def fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
    return "\n".join(lines)


def write_outputs(json_path, payload: dict, markdown: str) -> Path:
    """Write ``json_path`` and the markdown next to it (same name, ``.md``). Returns the JSON path."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, ensure_ascii=False)
        f.write("\n")
    with open(json_path.with_suffix(".md"), "w", encoding="utf-8") as f:
        f.write(markdown.rstrip() + "\n")
    return json_path


def report(json_path, payload: dict, markdown: str) -> Path:
    """Write the JSON and markdown, print the table and where it went."""
    path = write_outputs(json_path, payload, markdown)
    print(markdown)
    print(f"\nwrote {path} and {path.with_suffix('.md')}")
    return path
