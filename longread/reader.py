"""``Reader``: loads a model, prepares documents (cached), and answers questions."""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch

from .checkpoints import (available_memory, base_model_dir, check_delta, check_state, load_fusion_weights,
                          load_hf_model, load_tokenizer, read_json, read_safetensors, resolve_path, saved_configs)
from .decoding import Span, best_spans, null_probability
from .devices import default_dtype, resolve_device
from .document import Document, DocumentInput, load_document
from .errors import (CheckpointError, DocumentTooLargeError, EmptyDocumentError,
                     InvalidOptionError)
from .layout import (DocumentInputs, LayoutConfig, TokenizedDocument, document_inputs, question_inputs,
                     tokenize_document)
from .model import LongReaderModel
from .passage_head import PASSAGE_ENCODERS, PASSAGE_HEAD_NAME, HeadPassageEncoder, PassageHead, load_passage_head
from .progress import layer_progress
from .selection import READ_MODES, ChunkSelector, chunk_scores, read_layout, selector_pass, with_neighbours

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
CONFIG_NAME = "longread_config.json"
WEIGHTS_NAME = "model.safetensors"
DELTA_NAME = "delta.safetensors"
FUSION_NAME = "fusion.safetensors"
SELECTOR_NAME = "selector.safetensors"
CONTEXT_CHARS = 160
# tokens encoded at a time by the question-free layers (plus halos). On a CPU slices of 4k tokens
# keep each layer's working set near the caches: a 256k-token document encodes 1.4x faster than
# with 64k-token slices (docs/results/encode_slice_cpu.md); a GPU wants the larger slices.
ENCODE_SLICE = {"cpu": 1 << 12}
ENCODE_SLICE_DEFAULT = 1 << 16
# encoder fields a reader sets on top of an imported base checkpoint
_READER_ONLY_FIELDS = ("attention_window", "question_free_layers", "chunk_signal", "hidden_dropout_prob",
                       "gradient_checkpointing")


@dataclass
class ReaderConfig:
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    max_answer_tokens: int = 30
    temperature: float = 1.0          # calibration of span scores (fitted by the training script)
    top_k: int = 5
    ocr: bool = True                  # read text inside images (rapidocr-onnxruntime) into the document
    # passage-retrieval prior on span scores (longread/retrieval.py); weight 0 turns it off
    retrieval_weight: float = 0.0
    retrieval_temperature: float = 0.02
    retriever: Optional[str] = None   # sentence-embedding checkpoint (None: the pip-installed MiniLM)
    # what embeds the document's passages for the prior: "retriever" reads every passage with the
    # sentence retriever (six more layers over the document), "head" maps the reader's own cached
    # question-free states with its fitted PassageHead (longread/passage_head.py); questions are
    # embedded by the retriever either way
    passage_encoder: str = "retriever"
    # BM25 in the reader's word pieces (longread/lexical.py), scaled to [0, 1] over the document's
    # chunks, added with this weight to each chunk's prior score when ranking chunks to read
    lexical_weight: float = 0.0
    # minimum-Bayes-risk span choice (longread/decoding.py): 0 picks the most probable span
    mbr_temperature: float = 0.0
    mbr_candidates: int = 64
    # "not in the document": the question's [CLS] position is the no-answer slot of readers trained
    # with one (longread.training.campaign); the verdict is no answer when
    # log P(no answer) - log P(best span) > no_answer_threshold (fitted on held-out questions)
    no_answer: bool = False
    no_answer_threshold: float = 0.0
    # alternatives less probable than this are not returned (they carry no information)
    min_alternative_score: float = 1e-3
    # coarse to fine (longread/selection.py): "auto" reads, on a document of more than
    # read_full_chunks chunks, the read_chunks chunks the passage prior ranks first with
    # read_neighbours on each side, and more (read_chunks at a time, up to read_max_chunks ranked
    # chunks) while the reader is unsure: the best span's probability is below read_confidence, or
    # (readers with a no-answer slot) its verdict on what was read is "no answer". read_confidence
    # is 0 by default: with the shipped reader, further rounds cost twice as much and found no more
    # answers (docs/results/long_context_c2f2_cpu.md). "all" reads every chunk. A partial read sees
    # the summaries of the read_summaries chunks ranked first (None: of every chunk), so a
    # question's cost does not grow with the document's length
    read: str = "auto"
    read_full_chunks: int = 16
    read_chunks: int = 4
    read_neighbours: int = 0
    read_max_chunks: int = 12
    read_confidence: float = 0.0
    read_summaries: Optional[int] = 64
    # bridge hops (partial reads only): the question with the best span appended ranks the chunks
    # again and the read_chunks it ranks first that were not read are read with it; their best span
    # becomes the answer when it is more probable than the answer so far (and, with a no-answer
    # slot, is not a "no answer" verdict). For facts stated in two places ("X is what the keeper
    # holds" ... "the keeper holds 42"); each hop costs one more read
    read_hops: int = 0

    def __post_init__(self):
        rules = {"max_answer_tokens": self.max_answer_tokens >= 1, "top_k": self.top_k >= 1,
                 "temperature": self.temperature > 0, "retrieval_weight": self.retrieval_weight >= 0,
                 "retrieval_temperature": self.retrieval_temperature > 0,
                 "passage_encoder": self.passage_encoder in PASSAGE_ENCODERS,
                 "lexical_weight": self.lexical_weight >= 0,
                 "mbr_temperature": self.mbr_temperature >= 0, "mbr_candidates": self.mbr_candidates >= 1,
                 "no_answer_threshold": math.isfinite(self.no_answer_threshold),
                 "min_alternative_score": 0 <= self.min_alternative_score <= 1,
                 "read": self.read in READ_MODES, "read_full_chunks": _whole(self.read_full_chunks, 0),
                 "read_chunks": _whole(self.read_chunks, 1), "read_neighbours": _whole(self.read_neighbours, 0),
                 "read_max_chunks": _whole(self.read_max_chunks, 1),
                 "read_confidence": 0 <= self.read_confidence <= 1,
                 "read_summaries": self.read_summaries is None or _whole(self.read_summaries, 1),
                 "read_hops": _whole(self.read_hops, 0)}
        bad = [f"{k}={getattr(self, k)!r}" for k, ok in rules.items() if not ok]
        if bad:
            raise InvalidOptionError(
                f"invalid reader options {', '.join(bad)}: max_answer_tokens, top_k and mbr_candidates must be >= 1, "
                "temperatures > 0 (mbr_temperature >= 0, 0 = off), retrieval_weight and lexical_weight >= 0, "
                f"passage_encoder one of {', '.join(PASSAGE_ENCODERS)}, no_answer_threshold "
                "finite, min_alternative_score and read_confidence in [0, 1], read one of "
                f"{', '.join(READ_MODES)}, read_chunks and read_max_chunks whole numbers >= 1, read_full_chunks, "
                "read_neighbours and read_hops whole numbers >= 0, read_summaries a whole number >= 1 or None "
                "(every chunk)")


@dataclass
class Answer:
    text: str                 # == document.text[start:end]
    start: int                # character offsets into the document text
    end: int
    score: float              # probability of this span under the document-wide softmax
    chunk: int                # 0-based chunk the span starts in
    page: int                 # 1-based page (1 for a single string)
    context: str              # the passage around the answer
    context_start: int        # character offset of ``context`` in the document
    question: str = ""
    alternatives: List["Answer"] = field(default_factory=list)
    # the verdict "the document does not say": text/start/end are then the best guess only
    no_answer: bool = False
    no_answer_score: Optional[float] = None     # P(no answer), for readers with a no-answer slot
    # with images, start/end index the reading text (the document text with each image's OCR
    # text inserted at its anchor: ``prepared.document.text``); see longread/vision/reading.py
    source: str = "text"              # "image" when the span is text read inside an image
    image: Optional[int] = None       # index of that image (the document's images first)
    image_name: Optional[str] = None
    box: Optional[List[float]] = None  # [x0, y0, x1, y1] of the span's OCR lines, original pixels
    chunks_read: List[int] = field(default_factory=list)   # the chunks the question-aware layers read

    def to_dict(self) -> dict:
        d = asdict(self)
        d["alternatives"] = [a.to_dict() for a in self.alternatives]
        return d


@dataclass
class PreparedDocument:
    """A document tokenized and laid out once; its question-free encoding is cached here."""
    document: Document
    tokens: TokenizedDocument
    inputs: DocumentInputs
    states: Optional[torch.Tensor] = None     # (1, n, hidden) after the question-free layers
    states_key: Optional[tuple] = None
    reading: Optional[object] = None          # vision.reading.ReadingText when the document has images
    passages: Optional[dict] = None           # (encoder, lo, hi) -> (token -> passage, passage embeddings (P, d))
    summaries: Optional[tuple] = None         # ((1, C, hidden), (1, C)) chunk summaries of ``states``
    lexical: Optional[object] = None          # lexical.ChunkBM25 of its chunks

    @property
    def num_tokens(self) -> int:
        return self.tokens.num_tokens


def apply_delta(model: LongReaderModel, delta: dict, lora_scale: float = 1.0, where="the delta") -> None:
    """Merge a saved delta into the model: full tensors replace parameters; LoRA factors
    ``<name>.lora_A`` (r, in) and ``<name>.lora_B`` (out, r) add ``B @ A * lora_scale`` to ``<name>.weight``.
    A delta that does not fit the model (``where`` names it in the error) is refused before any change."""
    params = dict(model.named_parameters())
    check_delta(delta, {k: p.shape for k, p in params.items()}, where)
    for key, value in delta.items():
        if key.endswith(".lora_A"):
            base = key[: -len(".lora_A")]
            b = delta[base + ".lora_B"]
            params[base + ".weight"].data += (b.float() @ value.float() * lora_scale).to(params[base + ".weight"].dtype)
        elif key.endswith(".lora_B"):
            continue
        elif key in params:
            params[key].data.copy_(value)
        else:
            raise CheckpointError(f"delta weight {key!r} matches no parameter of the model")


class Reader:
    """Answers questions about long documents with one extractive span model."""

    def __init__(self, model: LongReaderModel, tokenizer, config: ReaderConfig,
                 device=None, dtype: Optional[torch.dtype] = None, cache_size: int = 4):
        self.device = resolve_device(device)
        self.dtype = dtype or default_dtype(self.device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.tokenizer = tokenizer
        self.config = config
        self._cache: "OrderedDict[str, PreparedDocument]" = OrderedDict()
        self._cache_size = cache_size
        self.progress: Optional[bool] = None      # progress bars: None = on a terminal, False = never
        self._retriever = None                    # loaded on first use when retrieval_weight > 0
        self.read_observers: list = []            # called with each read's selection.ReadLayout and summary chunks
        self.selector: Optional[ChunkSelector] = None   # learned chunk ranking (else the passage prior alone)
        self.passage_head: Optional[PassageHead] = None  # passage embeddings from question-free states

    # ---------------------------------------------------------------- loading and saving
    @classmethod
    def from_pretrained(cls, name_or_path: Union[str, Path, None] = None, device=None,
                        dtype: Optional[torch.dtype] = None, fusion: Union[str, Path, None] = None,
                        **options) -> "Reader":
        """``None``: the offline default reader shipped in the package. A directory written by
        ``save_pretrained``, a Hugging Face BERT/RoBERTa/Longformer checkpoint directory, or (with
        internet) a hub name. ``fusion``: a ``fusion.safetensors`` (from
        ``longread.training.train_vision`` or ``save_fusion``) whose image fusion layers and patch
        encoder are attached instead of the checkpoint's own. ``options`` override ReaderConfig /
        LayoutConfig fields."""
        path = DEFAULT_MODEL_DIR if name_or_path is None else resolve_path(str(name_or_path))
        saved: dict = {}
        if (path / CONFIG_NAME).exists():
            where = path / CONFIG_NAME
            saved = read_json(where, "reader config")
            enc_cfg, config = saved_configs(saved, where, ReaderConfig)      # checked before anything is built
            base = saved.get("base")
            if base is not None and not isinstance(base, str):
                raise CheckpointError(f"{where}: base must be the name of the base checkpoint or null, got {base!r}")
            if base:          # a small delta on top of a pip-installed base checkpoint
                lora_scale = saved.get("lora_scale", 1.0)
                if isinstance(lora_scale, bool) or not isinstance(lora_scale, (int, float)) \
                        or not math.isfinite(lora_scale):
                    raise CheckpointError(f"{where}: lora_scale must be a finite number, got {lora_scale!r}")
                delta = read_safetensors(path / DELTA_NAME, "delta weights")
                base_dir = base_model_dir(base)
                model, _ = load_hf_model(base_dir, **{k: getattr(enc_cfg, k) for k in _READER_ONLY_FIELDS})
                if model.config != enc_cfg:
                    raise CheckpointError(f"{path} was trained on a {base} whose architecture differs from the "
                                          f"installed one: {model.config} != {enc_cfg}")
                apply_delta(model, delta, lora_scale, where=path / DELTA_NAME)
                tok_dir = base_dir
            else:
                state = read_safetensors(path / WEIGHTS_NAME)
                model = LongReaderModel(enc_cfg)
                check_state(state, {k: v.shape for k, v in model.state_dict().items()}, path / WEIGHTS_NAME)
                model.load_state_dict(state)
                tok_dir = path
        else:
            if not (path / "config.json").is_file():
                raise CheckpointError(f"{path} is not a checkpoint directory: it has neither {CONFIG_NAME} (a reader "
                                      "saved with Reader.save_pretrained) nor config.json (a Hugging Face checkpoint)")
            model, hf_cfg = load_hf_model(path)
            if not model.has_trained_head:
                warnings.warn(f"{path} has no question-answering head: the span head is untrained and "
                              "its answers are not meaningful until it is fine-tuned", stacklevel=2)
            enc_cfg = model.config
            layout = LayoutConfig(position_offset=enc_cfg.position_offset,
                                  doc_token_type=1 if enc_cfg.type_vocab_size > 1 else 0,
                                  max_position_embeddings=enc_cfg.max_position_embeddings,
                                  summary_tokens=False)
            config = ReaderConfig(layout=layout)
            tok_dir = path
        if saved.get("fusion"):
            spec = saved["fusion"]
            if not (isinstance(spec, dict) and isinstance(spec.get("file"), str)
                    and isinstance(spec.get("layers"), list) and isinstance(spec.get("vision", {}), dict)
                    and all(isinstance(i, int) and not isinstance(i, bool) for i in spec["layers"])):
                raise CheckpointError(f"{path / CONFIG_NAME}: the 'fusion' section must be an object with 'file' "
                                      f"(a file name), 'layers' (layer numbers) and 'vision' (an object), got {spec!r}")
            vision = {k: v for k, v in spec.get("vision", {}).items() if k != "out_dim"}
            load_fusion_weights(model, path / spec["file"], layers=spec["layers"], vision_config=vision)
        if fusion is not None:
            load_fusion_weights(model, Path(fusion))
        selector_file, head_file = _section_file(saved, "selector", path), _section_file(saved, "passage_head", path)
        selector = None if selector_file is None else load_selector(selector_file, model.config.hidden_size)
        passage_head = None if head_file is None else load_passage_head(head_file, model.config.hidden_size)
        config = _with_options(config, options)
        tokenizer = load_tokenizer(tok_dir, model.config.vocab_size)
        reader = cls(model, tokenizer, config, device=device, dtype=dtype)
        reader.selector = None if selector is None else selector.to(reader.device)
        reader.passage_head = None if passage_head is None else passage_head.to(reader.device)
        return reader

    def save_pretrained(self, path: Union[str, Path]) -> None:
        """Write config, full weights (safetensors) and tokenizer: loadable with from_pretrained."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"encoder": self.model.config.to_dict(), "reader": asdict(self.config), "base": None}
        if self.model.fusion is not None:           # image fusion layers + vision tower: their own file
            from .vision.fusion import save_fusion

            from .vision.patch_encoder import PatchEncoder

            if not isinstance(self.model.vision, PatchEncoder):
                raise NotImplementedError("save_pretrained stores fusion layers with the project's PatchEncoder; "
                                          "with a pretrained vision tower, save the fusion with "
                                          "longread.vision.fusion.save_fusion and keep the tower's directory")
            save_fusion(self.model, path / FUSION_NAME)
            meta["fusion"] = {"file": FUSION_NAME, "layers": sorted(int(i) for i in self.model.fusion),
                              "vision": self.model.vision.config.to_dict()}
        for section, module, name in (("selector", self.selector, SELECTOR_NAME),
                                      ("passage_head", self.passage_head, PASSAGE_HEAD_NAME)):
            if module is not None:
                save_file({k: v.detach().to("cpu", torch.float32).contiguous() for k, v in module.state_dict().items()},
                          str(path / name))
                meta[section] = {"file": name}
        with open(path / CONFIG_NAME, "w") as f:
            json.dump(meta, f, indent=2)
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.model.state_dict().items()
                 if not k.startswith(("fusion.", "vision."))}
        save_file(state, str(path / WEIGHTS_NAME))
        self.tokenizer.save_pretrained(str(path))

    # ---------------------------------------------------------------- documents
    def prepare(self, doc: DocumentInput, images: Optional[Sequence] = None) -> PreparedDocument:
        """Tokenize and lay out a document (cached by content: a further question reuses it).
        ``images`` (and ``Document.images``): their OCR text is inserted at their anchors."""
        if isinstance(doc, PreparedDocument):
            if images:
                raise TypeError("this document is already prepared; pass images to prepare(doc, images)")
            return doc
        document = load_document(doc)
        if images or document.images:
            from .vision.pipeline import prepare_with_images
            return prepare_with_images(self, document, images)
        key = hashlib.sha1(document.text.encode("utf-8", "surrogatepass")).hexdigest() + repr(document.page_starts)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        tokens = tokenize_document(document.text, self.tokenizer, self.config.layout)
        if tokens.num_tokens == 0:
            raise EmptyDocumentError("the document has no readable tokens (only control or unknown characters)")
        prepared = PreparedDocument(document, tokens, document_inputs(tokens, self.config.layout))
        self._cache[key] = prepared
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return prepared

    def _check_fits(self, n: int) -> None:
        cfg = self.model.config
        left, right = cfg.attention_window
        bytes_per = torch.finfo(self.dtype).bits // 8
        # the cached states of every token, plus the working set of one slice of the encoding:
        # hidden states and their projections (~8 per token) and attention scores of one layer
        work = min(n, self._encode_slice() + 2 * cfg.question_free_layers * max(left, right))
        need = (n * cfg.hidden_size + work * (8 * cfg.hidden_size + 2 * cfg.num_attention_heads * (left + right + 64))
                ) * bytes_per
        if self.device.type == "cuda":
            free = torch.cuda.mem_get_info(self.device)[0]
        else:
            free = available_memory()
        if free is not None and need > free:
            raise DocumentTooLargeError(
                f"the document has {n} tokens and needs about {need / 2**30:.1f} GiB on {self.device}, "
                f"but only {free / 2**30:.1f} GiB is free; split the document, or use a device with more memory")

    def _encode_slice(self) -> int:
        return ENCODE_SLICE.get(self.device.type, ENCODE_SLICE_DEFAULT)

    @torch.inference_mode()
    def _document_states(self, prepared: PreparedDocument) -> torch.Tensor:
        key = (id(self.model), self.device, self.dtype, self.model.config.question_free_layers)
        if prepared.states is None or prepared.states_key != key:
            self._check_fits(prepared.inputs.input_ids.shape[1])
            d = prepared.inputs
            to = lambda t: t.to(self.device)  # noqa: E731
            k = self.model.config.question_free_layers
            with layer_progress(self.model.layers[:k], d.input_ids.shape[1], "encoding document", self.progress):
                prepared.states = self.model.encode_document(to(d.input_ids), to(d.position_ids), to(d.token_type_ids),
                                                             slice_tokens=self._encode_slice())
            prepared.states_key, prepared.summaries = key, None
        return prepared.states

    def question_free_states(self, prepared: PreparedDocument, lo: int, hi: int) -> torch.Tensor:
        """(hi - lo, hidden) cached question-free states of document tokens ``[lo, hi)``; under
        sequence parallelism (``parallel/sequence.py``) the rank's own shard, which is that range."""
        if prepared.states_key is not None and prepared.states_key[0] == "shard":
            if prepared.states.shape[1] != hi - lo:
                raise ValueError(f"the cached shard holds {prepared.states.shape[1]} tokens, not [{lo}, {hi})")
            return prepared.states[0]
        return self._document_states(prepared)[0, lo:hi]

    @torch.inference_mode()
    def _summaries(self, prepared: PreparedDocument):
        """The chunk summaries of the cached question-free encoding (None without summary tokens)."""
        states = self._document_states(prepared)
        d = prepared.inputs
        if d.num_chunks and prepared.summaries is None:
            prepared.summaries = self.model.summaries(states, d.chunk_ids.to(self.device), d.num_chunks)
        return prepared.summaries if d.num_chunks else None

    def warm(self, prepared: PreparedDocument) -> PreparedDocument:
        """Compute and cache what every question of ``prepared`` reuses (its question-free
        encoding and, with the passage prior, its passage embeddings) now, so that the first
        question costs what a further one does."""
        self._document_states(prepared)
        if self.config.retrieval_weight or self._reads_partially(prepared, self.config.read):
            from .retrieval import passage_embeddings

            passage_embeddings(self.passage_encoder, prepared)
        if self.config.lexical_weight:
            self._lexical(prepared)
        return prepared

    # ---------------------------------------------------------------- answering
    @torch.inference_mode()
    def logits(self, doc: DocumentInput, question: str):
        """Start/end logits over the document tokens: two (n,) float32 tensors."""
        start, end, _ = self.question_logits(doc, question)
        return start, end

    @torch.inference_mode()
    def question_logits(self, doc: DocumentInput, question: str):
        """(start (n,), end (n,), null (2,)): the document tokens' start/end logits and the
        no-answer slot's (the question's [CLS] position), every chunk read."""
        prepared = self.prepare(doc)
        _, start, end, null, _ = self.read(prepared, question, range(prepared.tokens.num_chunks))
        return start, end, null

    @torch.inference_mode()
    def encode_question(self, question: str) -> torch.Tensor:
        """The question through the question-free layers: (1, Lq, hidden), reusable by every
        :meth:`read` of that question."""
        q = question_inputs(question, self.tokenizer, self.config.layout)
        to = lambda t: t.to(self.device)  # noqa: E731
        return self.model.encode_question(to(q.input_ids), to(q.position_ids), to(q.token_type_ids))

    @torch.inference_mode()
    def read(self, prepared: PreparedDocument, question: Union[str, torch.Tensor], chunks: Sequence[int],
             summary_chunks: Optional[Sequence[int]] = None):
        """The question-aware layers on ``[question | summaries | the tokens of chunks]`` (sorted
        chunk indices; non-adjacent runs apart, see longread/selection.py). ``question``: its text
        or :meth:`encode_question`'s states. ``summary_chunks``: the chunks whose summaries are
        read (sorted; default every chunk). Returns (token_index (m,), start (m,), end (m,),
        null (2,), run (m,)): the document token index of each read token, its start/end logits,
        the no-answer slot's logits and each token's run."""
        to = lambda t: t.to(self.device)  # noqa: E731
        states = self._document_states(prepared)
        summaries = self._summaries(prepared)
        q_states = question if isinstance(question, torch.Tensor) else self.encode_question(question)
        d = prepared.inputs
        num_chunks = prepared.tokens.num_chunks
        chunks = list(chunks)
        for name, given in (("chunks", chunks), ("summary_chunks", summary_chunks)):
            if given is None:
                continue
            given = list(given)
            if not given or any(not 0 <= c < num_chunks for c in given) or given != sorted(set(given)):
                raise InvalidOptionError(f"{name} must be distinct chunk indices in [0, {num_chunks}) in increasing "
                                         f"order, got {given[:8]}{'...' if len(given) > 8 else ''}")
        summary_index = torch.arange(d.num_chunks)                    # chunk of each summary read
        if summaries is not None and summary_chunks is not None and len(summary_chunks) < d.num_chunks:
            summary_index = torch.as_tensor(list(summary_chunks), dtype=torch.long)
            pick = to(summary_index)
            summaries = (summaries[0][:, pick], summaries[1][:, pick])
        num_summaries = len(summary_index)
        layout = read_layout(prepared.tokens.chunk_starts, chunks, max(self.model.config.attention_window))
        for observe in self.read_observers:
            observe(layout, summary_index)
        gather = to(layout.gather)
        real = gather >= 0
        whole = len(chunks) == prepared.tokens.num_chunks
        doc = states if whole else states[:, gather.clamp(min=0)] * real[None, :, None].to(states.dtype)
        chunk_ids = to(d.chunk_ids) if whole else to(d.chunk_ids)[:, gather.clamp(min=0)]
        k = self.model.config.question_free_layers
        with layer_progress(self.model.layers[k:], doc.shape[1], "reading", self.progress):
            out = self.model.read(q_states, doc, chunk_ids, num_summaries, doc_mask=None if whole else real[None],
                                  image_context=self._image_context(prepared), summaries=summaries)
        lq = q_states.shape[1]
        null = torch.stack([out.start_logits[0, 0], out.end_logits[0, 0]]).float()
        start, end = out.start_logits[0, lq:], out.end_logits[0, lq:]
        if not whole:
            start, end = start[real], end[real]
        return layout.token_index, start, end, null, layout.run_of_token

    def _image_context(self, prepared: PreparedDocument):
        """Patch embeddings for the model's image fusion layers (None: no images or no fusion)."""
        if prepared.reading is None or self.model.fusion is None:
            return None
        from .vision.fusion import image_context
        return image_context(self.model, prepared)

    def answer(self, doc: DocumentInput, question: str = None, images: Optional[Sequence] = None,
               top_k: Optional[int] = None, max_answer_tokens: Optional[int] = None,
               allow_no_answer: Optional[bool] = None, read: Optional[str] = None) -> Answer:
        """The best answer span in ``doc`` for ``question``, with up to ``top_k - 1`` alternatives
        (those with a probability of at least ``config.min_alternative_score``).
        ``images``: see :meth:`prepare`; an answer read inside an image says so (``source``,
        ``image``, ``image_name``, ``box``), and no span mixes document text with image text.
        ``allow_no_answer`` (default: ``config.no_answer``, on for readers trained with a
        no-answer slot): the answer may be the verdict ``no_answer=True`` ("the document does not
        say"), still carrying the best guess and its alternatives. ``read`` (default
        ``config.read``): "auto" reads the chunks the passage prior ranks first (coarse to fine,
        longread/selection.py), "all" every chunk; ``Answer.chunks_read`` lists what was read."""
        top_k = self.config.top_k if top_k is None else top_k
        max_answer_tokens = self.config.max_answer_tokens if max_answer_tokens is None else max_answer_tokens
        _check_count("top_k", top_k)
        _check_count("max_answer_tokens", max_answer_tokens)
        read = self.config.read if read is None else read
        if read not in READ_MODES:
            raise InvalidOptionError(f"read must be one of {', '.join(READ_MODES)}, got {read!r}")
        allow = self.config.no_answer if allow_no_answer is None else bool(allow_no_answer)
        prepared = self.prepare(doc, images)
        _, _, spans, p_null, done = self.read_rounds(prepared, question, read, top_k, max_answer_tokens)
        if self._reads_partially(prepared, read):
            for _ in range(self.config.read_hops):
                hop = self._hop(prepared, question, spans, done, top_k, max_answer_tokens)
                if hop is not None:
                    spans, p_null = hop
        answer = self.assemble_answer(prepared, spans, question, p_null, allow)
        answer.chunks_read = sorted(done)
        return answer

    @torch.inference_mode()
    def read_rounds(self, prepared: PreparedDocument, question: str, read: str, top_k: int, max_answer_tokens: int):
        """The reading :meth:`answer` does before any bridge hop: every chunk, or (``read`` "auto"
        on a document of more than ``read_full_chunks`` chunks) rounds of the next-ranked chunks
        and their neighbours not read yet, until the best span is probable enough or
        ``read_max_chunks`` ranked chunks are in. Returns (the :meth:`read` outputs, the
        question's passage cosines or None, the :meth:`decode` of those reads: spans and
        P(no answer), the set of chunks read)."""
        num_chunks = prepared.tokens.num_chunks
        selective = self._reads_partially(prepared, read)
        passages = None
        if self.config.retrieval_weight or selective:
            from .retrieval import passage_cosines

            passages = passage_cosines(self.passage_encoder, prepared, question)
        if not selective:
            reads = [self.read(prepared, question, range(num_chunks))]
            spans, p_null = self.decode(prepared, reads, passages, top_k, max_answer_tokens)
            return reads, passages, spans, p_null, set(range(num_chunks))
        q_states = self.encode_question(question)
        ranking, seen = self._ranking(prepared, question, passages, q_states)
        most = min(self.config.read_max_chunks, num_chunks)
        depth, done, reads = 0, set(), []
        while True:
            depth = min(depth + self.config.read_chunks, most)
            new = [c for c in with_neighbours(ranking[:depth], self.config.read_neighbours, num_chunks)
                   if c not in done]
            if new:
                reads.append(self.read(prepared, q_states, new, summary_chunks=seen))
                done.update(new)
            spans, p_null = self.decode(prepared, reads, passages, top_k, max_answer_tokens)
            if depth >= most or not self._unsure(spans, p_null):
                return reads, passages, spans, p_null, done

    def _hop(self, prepared: PreparedDocument, question: str, spans, done: set, top_k: int, max_answer_tokens: int):
        """One bridge hop (``read_hops``): reads the chunks not in ``done`` that ``question`` with the
        best span appended ranks first (adding them to ``done``). Returns (spans, P(no answer)) of
        that read when its best span is more probable than ``spans[0]`` and not a no-answer
        verdict, else None."""
        from .retrieval import passage_cosines

        asked = self._bridge_question(prepared, question, spans[0])
        passages = passage_cosines(self.passage_encoder, prepared, asked)
        q_states = self.encode_question(asked)
        ranking, seen = self._ranking(prepared, asked, passages, q_states)
        fresh = [c for c in ranking if c not in done][:self.config.read_chunks]
        new = [c for c in with_neighbours(fresh, self.config.read_neighbours, prepared.tokens.num_chunks)
               if c not in done]
        if not new:
            return None
        done.update(new)
        read = self.read(prepared, q_states, new, summary_chunks=seen)
        hop_spans, hop_null = self.decode(prepared, [read], passages, top_k, max_answer_tokens)
        if hop_spans[0].score <= spans[0].score:
            return None
        if hop_null is not None and self._says_no_answer(hop_null, hop_spans[0].score):
            return None
        return hop_spans, hop_null

    def _ranking(self, prepared: PreparedDocument, question: str, passages, q_states):
        """(chunk indices, best first; the chunks whose summaries a partial read sees, sorted, or
        None for every chunk) for ``question``."""
        scores = self.chunk_ranking_scores(prepared, question, passages, q_states)
        ranking = torch.argsort(scores, descending=True, stable=True).tolist()
        limit = self.config.read_summaries
        return ranking, None if limit is None or limit >= len(ranking) else sorted(ranking[:limit])

    def _bridge_question(self, prepared: PreparedDocument, question: str, span) -> str:
        """``question`` followed by ``span``'s text, cut to the layout's question length."""
        room = self.config.layout.max_question_tokens - len(self.tokenizer(question)["input_ids"])
        ids = prepared.tokens.input_ids[span.start:span.end + 1].tolist()[:max(room, 0)]
        return f"{question} {self.tokenizer.decode(ids)}" if ids else question

    @torch.inference_mode()
    def chunk_ranking_scores(self, prepared: PreparedDocument, question: str, passages=None,
                             q_states: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(C,) float32 score of each chunk for ``question``, higher = read first: the passage prior
        (``selection.chunk_scores``: best passage cosine + half the cosine to the chunk's mean
        passage embedding), plus ``lexical_weight`` times the chunk's BM25 score over the
        document's best, fused with the learned selector's pass over ``[question | summaries]``
        when the reader has one. ``passages`` (``passage_cosines`` of the question) and
        ``q_states`` (:meth:`encode_question`) are computed when not given."""
        from .retrieval import passage_cosines, passage_embeddings

        encoder = self.passage_encoder
        if passages is None:
            passages = passage_cosines(encoder, prepared, question)
        emb = passage_embeddings(encoder, prepared)[1]
        prior = chunk_scores(*passages, prepared.inputs.token_chunk, prepared.tokens.num_chunks, passage_emb=emb)
        if self.config.lexical_weight:
            bm25 = self._lexical(prepared).scores(self.tokenizer(question, add_special_tokens=False)["input_ids"])
            prior = prior + self.config.lexical_weight * bm25 / bm25.max().clamp(min=1e-6)
        summaries = self._summaries(prepared) if self.selector is not None else None
        if summaries is None:
            return prior
        q_states = self.encode_question(question) if q_states is None else q_states
        q_out, s_out = selector_pass(self.model, q_states, summaries[0])
        return self.selector(q_out, s_out, prior.to(self.device)[None])[0].float().cpu()

    def _lexical(self, prepared: PreparedDocument):
        if prepared.lexical is None:
            from .lexical import ChunkBM25

            prepared.lexical = ChunkBM25(prepared.tokens.input_ids, prepared.inputs.token_chunk,
                                         prepared.tokens.num_chunks)
        return prepared.lexical

    def _unsure(self, spans, p_null: Optional[float]) -> bool:
        """Whether a partial read calls for another round: the best span is less probable than
        ``read_confidence``, or the no-answer slot says the answer is not in what was read."""
        if spans[0].score < self.config.read_confidence:
            return True
        return p_null is not None and self._says_no_answer(p_null, spans[0].score)

    def _reads_partially(self, prepared: PreparedDocument, read: str) -> bool:
        """Whether a question in ``read`` mode reads ``prepared`` coarse to fine (ranked chunks)."""
        return read == "auto" and prepared.tokens.num_chunks > self.config.read_full_chunks and self._ranks_chunks()

    def _ranks_chunks(self) -> bool:
        """Whether the passage prior can rank this reader's chunks: the retriever reads the
        reader's token ids, so they must share a vocabulary."""
        if not hasattr(self, "_shared_vocab"):
            self._shared_vocab = self.passage_encoder.tokenizer.get_vocab() == self.tokenizer.get_vocab()
        return self._shared_vocab

    def decode(self, prepared: PreparedDocument, reads, passages, top_k: int, max_answer_tokens: int):
        """Rank spans over the tokens of one or more reads (:meth:`read` outputs: their logits
        share one softmax) with the config's decoding (passage prior over ``passages``, the
        question's passage cosines; temperature; MBR; no-answer slot). Returns (spans with
        document token indices, P(no answer) or None)."""
        token_index = torch.cat([r[0] for r in reads])
        start_logits = torch.cat([r[1] for r in reads])
        end_logits = torch.cat([r[2] for r in reads])
        null = torch.stack([r[3] for r in reads]).mean(0)           # the no-answer slot of each read, averaged
        runs, offset = [], 0
        for r in reads:                                             # a run of one read never joins another's
            runs.append(r[4] + offset)
            offset += int(r[4].max()) + 1
        run = torch.cat(runs)
        order = torch.argsort(token_index)                          # document order
        token_index, start_logits, end_logits, run = (token_index[order], start_logits[order.to(start_logits.device)],
                                                      end_logits[order.to(end_logits.device)], run[order])
        if self.config.retrieval_weight:
            from .retrieval import chunk_log_prior

            token_passage, cosine = passages
            prior = chunk_log_prior(cosine, self.config.retrieval_temperature)[token_passage[token_index]]
            bonus = prior.to(start_logits.device) * (self.config.retrieval_weight * self.config.temperature / 2)
            start_logits, end_logits = start_logits + bonus, end_logits + bonus
        null_logits = (float(null[0]), float(null[1])) if self.config.no_answer else None
        # a span stays inside one run of read chunks and one text or OCR segment
        key = run
        if prepared.reading is not None:
            text_segments = torch.as_tensor(prepared.reading.token_segments(prepared.tokens.offsets[:, 0]))
            key = key * (int(text_segments.max()) + 1) + text_segments[token_index]
        segments = torch.cumsum(torch.cat([torch.zeros(1, dtype=torch.long), (key[1:] != key[:-1]).long()]), 0)
        spans = best_spans(start_logits, end_logits, top_k=top_k, max_answer_tokens=max_answer_tokens,
                           temperature=self.config.temperature, mbr_temperature=self.config.mbr_temperature,
                           mbr_candidates=self.config.mbr_candidates, segments=segments, null_logits=null_logits)
        spans = [Span(int(token_index[s.start]), int(token_index[s.end]), s.score) for s in spans]
        p_null = None
        if null_logits is not None:
            p_null = null_probability(start_logits, end_logits, null_logits, self.config.temperature)
        return spans, p_null

    def assemble_answer(self, prepared: PreparedDocument, spans, question: str, p_null: Optional[float],
                        allow_no_answer: bool) -> Answer:
        """The Answer for the ranked ``spans``: alternatives below ``min_alternative_score`` dropped,
        and with ``p_null`` (P(no answer)) the verdict against ``no_answer_threshold``."""
        answers = [self._to_answer(prepared, s, question) for s in spans]
        best = answers[0]
        best.alternatives = [a for a in answers[1:] if a.score >= self.config.min_alternative_score]
        if p_null is not None:
            best.no_answer_score = p_null
            best.no_answer = allow_no_answer and self._says_no_answer(p_null, max(s.score for s in spans))
        return best

    def _says_no_answer(self, p_null: float, top: float) -> bool:
        """The no-answer verdict: log P(no answer) - log P(best span) > no_answer_threshold."""
        return math.log(max(p_null, 1e-300)) - math.log(max(top, 1e-300)) > self.config.no_answer_threshold

    @property
    def retriever(self):
        """The sentence-embedding retriever behind the passage prior (loaded on first use)."""
        if self._retriever is None:
            from .retrieval import ChunkRetriever

            self._retriever = ChunkRetriever.from_pretrained(self.config.retriever, device=self.device,
                                                             dtype=self.dtype, max_tokens=512)
        return self._retriever

    @property
    def passage_encoder(self):
        """What embeds the document's passages for the prior (``config.passage_encoder``): the
        sentence retriever, or the reader's passage head over its question-free states."""
        if self.config.passage_encoder == "retriever":
            return self.retriever
        if self.passage_head is None:
            raise InvalidOptionError("passage_encoder='head' needs a reader with a passage head "
                                     f"({PASSAGE_HEAD_NAME}, from longread.training.fit_passage_head); "
                                     "this reader has none: use passage_encoder='retriever'")
        return HeadPassageEncoder(self, self.passage_head, self.retriever)

    def retrieval_prior(self, prepared: PreparedDocument, question: str) -> torch.Tensor:
        """log p(passage | question) for every document token, (n,) float32 (see longread/retrieval.py)."""
        from .retrieval import passage_log_prior

        prior = passage_log_prior(self.passage_encoder, prepared, question, self.config.retrieval_temperature)
        return prior.to(self.device)

    def _to_answer(self, prepared: PreparedDocument, span, question: str) -> Answer:
        doc, offsets = prepared.document, prepared.tokens.offsets
        start, end = int(offsets[span.start, 0]), int(offsets[span.end, 1])
        c0 = max(0, start - CONTEXT_CHARS)
        c1 = min(len(doc.text), end + CONTEXT_CHARS)
        ans = Answer(text=doc.text[start:end], start=start, end=end, score=span.score,
                     chunk=int(prepared.inputs.token_chunk[span.start]), page=doc.page_of(start),
                     context=doc.text[c0:c1], context_start=c0, question=question)
        found = prepared.reading.locate(start, end) if prepared.reading is not None else None
        if found is not None:
            ans.source, ans.image, ans.image_name, ans.box = "image", found[0], found[1], list(found[2])
        return ans


def _with_options(config: ReaderConfig, options: dict) -> ReaderConfig:
    layout_keys = {f.name for f in fields(LayoutConfig)}
    reader_keys = {f.name for f in fields(ReaderConfig)} - {"layout"}
    unknown = set(options) - layout_keys - reader_keys
    if unknown:
        raise TypeError(f"unknown reader options {sorted(unknown)}; valid: {sorted(layout_keys | reader_keys)}")
    layout = LayoutConfig(**{**asdict(config.layout), **{k: v for k, v in options.items() if k in layout_keys}})
    rest = {k: v for k, v in options.items() if k in reader_keys}
    return ReaderConfig(**{**asdict(config), "layout": layout, **rest})


def _section_file(saved: dict, section: str, path: Path) -> Optional[Path]:
    """The file a reader config's ``section`` names ({"file": name}), or None without the section."""
    spec = saved.get(section)
    if not spec:
        return None
    if not (isinstance(spec, dict) and isinstance(spec.get("file"), str)):
        raise CheckpointError(f"{path / CONFIG_NAME}: the '{section}' section must be an object with 'file' "
                              f"(a file name), got {spec!r}")
    return path / spec["file"]


def load_selector(path: Path, hidden: int) -> ChunkSelector:
    """A ``ChunkSelector`` from its safetensors file (from longread.training.train_selector)."""
    state = read_safetensors(path, "chunk selector weights")
    selector = ChunkSelector(hidden)
    check_state(state, {k: v.shape for k, v in selector.state_dict().items()}, path)
    selector.load_state_dict(state)
    return selector.eval()


def _whole(value, least: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= least


def _check_count(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOptionError(f"{name} must be a whole number >= 1, got {value!r}")
