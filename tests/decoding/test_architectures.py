"""Architecture matrix (issue 12): the NEST loop on every decoder-only family a user is likely to bring.

Each family is a tiny randomly initialised model (hidden 64, 2–4 layers, float32) with the default
model's tokenizer. Sliding-window families get a window of 8 tokens, far shorter than the prompt, so
every rejected draft is rolled back past the window (the crash of issue 12); Gemma-3 mixes sliding
and global layers, Qwen2/Qwen3 mix full and sliding ones, GPT-2 has learned positions and its
tokenizer no chat template (plain-prompt fallback, with a warning).

A random output layer would make greedy text a string of arbitrary tokens; here only the rows of a
few dozen one-token English words are non-zero, so the model (still random, initialised with a wider
range than usual for livelier text) writes those words, and the token store holds its own greedy text
with a word changed every fifth word. Keys are taken at hidden-state index 0 (the token embeddings,
plus learned positions for GPT-2), so the kNN search finds the store's occurrences of the current word:
drafts are frequent, partly accepted and rejected at the changed words. Properties per family (NEST.md §5):
(a) λ = 1 through the real loop with a non-empty store equals greedy ``generate``; (b) lossless NEST
equals greedy ``generate`` while drafts are verified and rejected; (c) after any accept/reject pattern
the cache gives the logits of a fresh forward; (d) one forward per verification, counted by a hook;
(e) copied spans are exact in the document, the chunk and the response.

The models run on ``$NEST_TEST_DEVICE`` (default ``cpu``; ``python benchmarks/device_check.py`` sets it to the
accelerator it finds), so the same properties are checked on a GPU.
"""

from __future__ import annotations

import copy
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from nest_integrations import Document, NestConfig, NestEngine, UnsupportedModelError
from nest_integrations.chunks import chunks_from_documents
from nest_integrations.decoding.cache import cache_kwarg, check_croppable, crop_cache, new_cache
from nest_integrations.decoding.loop import NestDecoder
from nest_integrations.models import LoadedModel
from nest_integrations.prompts import NoChatTemplateWarning, render_prompt, to_messages

DEVICE = os.environ.get("NEST_TEST_DEVICE", "cpu")
WINDOW = 8
NEW_TOKENS = 40
INIT_RANGE = 0.3
KEY_LAYER = 0
QUESTION = "Tell me about the river bank."
WORDS = (
    "the river bank fox runs over lazy dog near old town bridge water green hill small house stone road north "
    "south east west light dark morning evening market people children garden tree leaves wind rain snow summer "
    "winter boat fish bird song voice story book letter friend mother father king queen castle wall gate door "
    "window table bread cheese apple"
).split()

_ATTN = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512
)
_GQA = dict(_ATTN, num_key_value_heads=2)
_GEMMA = dict(_GQA, head_dim=16, query_pre_attn_scalar=16, sliding_window=WINDOW)

# family: (config class, model class, config fields, sliding window?)
FAMILIES: dict[str, tuple[str, str, dict[str, Any], bool]] = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", _GQA, False),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(_GQA, sliding_window=WINDOW), True),
    # layer 0 full attention, layer 1 sliding (max_window_layers = 1)
    "qwen2": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        dict(_GQA, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
        True,
    ),
    "qwen3": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        dict(_GQA, head_dim=16, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
        True,
    ),
    # Gemma-2 alternates sliding / global layers; Gemma-3 is given an explicit mix
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", _GEMMA, True),
    "gemma3": (
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        dict(
            _GEMMA,
            num_hidden_layers=4,
            layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        ),
        True,
    ),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(_GQA, sliding_window=WINDOW), True),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=64, n_layer=2, n_head=4, n_positions=512), False),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", _ATTN, False),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", _GQA, False),
}

# the loop's own properties, without the answer-level policies (sentence stops, abstention)
_LOOP_ONLY = dict(
    method="nest",
    answer_draft="none",
    stop_after_cited_sentence=False,
    max_sentences=None,
    abstain="off",
    retriever="bm25",
    passages=16,
    max_new_tokens=NEW_TOKENS,
    # the random text has no sentence ends: one output sentence may copy from several chunks
    sentence_source="any",
    key_layer=KEY_LAYER,
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread (two threads only wait on each other on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer(tiny_lm):
    """The default model's tokenizer (``tiny_lm`` skips, or fails in CI, when the default model is missing)."""
    return tiny_lm.tokenizer


@dataclass
class Arch:
    name: str
    lm: LoadedModel
    engine: NestEngine
    documents: list[Document]
    prompt_ids: list[int]
    greedy: list[int]
    sliding: bool


def _tiny_model(name: str, tok) -> Any:
    import transformers

    config_cls, model_cls, fields, _ = FAMILIES[name]
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    fields = dict(fields, initializer_range=INIT_RANGE)  # larger than usual: livelier (less repetitive) random text
    config = getattr(transformers, config_cls)(vocab_size=len(tok), tie_word_embeddings=False, **fields, **ids)
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(config).eval()
    words = [tok(" " + w, add_special_tokens=False)["input_ids"] for w in WORDS]
    assert all(len(w) == 1 for w in words)
    head = model.get_output_embeddings().weight
    with torch.no_grad():
        rows = torch.randn(len(words), head.shape[1], generator=torch.Generator().manual_seed(1))
        head.zero_()
        head[[w[0] for w in words]] = rows
    return model.to(DEVICE)


def _greedy(lm: LoadedModel, prompt_ids: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt_ids], device=lm.device)
    with torch.inference_mode():
        out = lm.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            do_sample=False,
            pad_token_id=lm.tokenizer.eos_token_id,
        )
    return out[0, len(prompt_ids) :].tolist()


def _store_text(tok, tokens: list[int], shift: int) -> str:
    """The model's own greedy words with every fifth word (from ``shift``) replaced by another word."""
    words = [tok.decode([t]).strip() for t in tokens]
    out = []
    for i, w in enumerate(words):
        if i % 5 == shift:
            w = WORDS[(WORDS.index(w) + 7 + i) % len(WORDS)] if w in WORDS else "stone"
        out.append(w)
    return " ".join(out) + "."


@pytest.fixture(scope="module", params=list(FAMILIES))
def arch(request, tokenizer) -> Arch:
    return build(request.param, tokenizer)


def build(name: str, tokenizer) -> Arch:
    """The tiny model of family ``name``, its engine over its own (altered) greedy text, prompt and greedy output."""
    tok = tokenizer
    if name == "gpt2":
        tok = copy.deepcopy(tokenizer)
        tok.chat_template = None  # GPT-2's tokenizer has none: the engine falls back to a plain prompt
    model = _tiny_model(name, tok)
    lm = LoadedModel(model=model, tokenizer=tok, model_id=f"tiny-random-{name}", path=Path("."), dtype="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoChatTemplateWarning)
        prompt_ids = render_prompt(tok, to_messages(QUESTION))
    continuation = _greedy(lm, prompt_ids, 64)
    docs = [Document("a", _store_text(tok, continuation, 3)), Document("b", _store_text(tok, continuation, 1))]
    engine = NestEngine(lm, chunks_from_documents(docs, chunk_size=120), NestConfig(**_LOOP_ONLY))
    return Arch(name, lm, engine, docs, prompt_ids, continuation[:NEW_TOKENS], FAMILIES[name][3])


def _store(arch: Arch):
    eng = arch.engine
    idx = list(range(len(eng.chunks)))
    return eng.token_store.request_view(idx, [c.text for c in eng.chunks], device=arch.lm.device)


def _checked(arch: Arch, call):
    """``call()``, checking that only the template-less tokenizer (GPT-2) falls back to a plain prompt, warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = call()
    fallback = [w for w in caught if issubclass(w.category, NoChatTemplateWarning)]
    assert bool(fallback) == (arch.name == "gpt2")
    return out


def _generate(arch: Arch, **cfg):
    return _checked(arch, lambda: arch.engine.generate(QUESTION, **cfg))


def test_cache_layers_follow_the_architecture(arch: Arch) -> None:
    cache = new_cache(arch.lm.model)
    sliding = cache.is_sliding
    if arch.sliding:
        assert len(arch.prompt_ids) > 2 * WINDOW  # every rollback below happens past the window
        assert any(sliding)
        if arch.name in ("gemma2", "gemma3", "qwen2", "qwen3"):
            assert not all(sliding)  # hybrid: sliding and global layers
    else:
        assert not any(sliding)
    prompt_ids = _checked(arch, lambda: arch.engine.prepare(QUESTION)[0])
    assert prompt_ids == arch.prompt_ids
    if arch.name == "gpt2":  # the plain prompt: the question itself
        assert prompt_ids == arch.lm.tokenizer(QUESTION)["input_ids"]


def test_lambda_one_through_the_real_loop_equals_greedy_generate(arch: Arch) -> None:
    res = _generate(arch, method="knnlm", knn_lambda=1.0)
    assert res.stats.forward_passes == NEW_TOKENS  # one per token: the prefill, then one per token fed
    assert res.passages and len(_store(arch)) > 0
    assert res.token_ids == arch.greedy


def test_lossless_nest_equals_greedy_generate_while_drafts_are_rejected(arch: Arch) -> None:
    res = _generate(arch, acceptance="lossless")
    assert res.token_ids == arch.greedy
    st = res.stats
    assert st.tokens_accepted > 0  # drafts were copied …
    assert st.tokens_drafted > st.tokens_accepted  # … and rejected (the cache rolled back past the window)
    assert st.forward_passes < NEW_TOKENS


class _ScriptedAcceptor:
    """Accepts a scripted number of draft tokens per verification; logs each verification."""

    def __init__(self, pattern, log=None):
        self.pattern = pattern
        self.i = 0
        self.log = log

    def accept_length(self, p_mix, lm_logits, draft):
        if self.log is not None:
            self.log.append(("verify", int(draft.numel())))
        k = self.pattern[self.i % len(self.pattern)]
        self.i += 1
        return min(k, int(draft.numel()))


def _decoder(arch: Arch, acceptor, ngram: bool = False) -> NestDecoder:
    # ngram=False: kNN anchors only (the patterns below were chosen for them); True: n-gram matches may also
    # start copies anywhere, including right after a rejected draft (its draft then rides with the correction)
    extra = dict(ngram_max=3, ngram_min=1, ngram_gate="always") if ngram else dict(ngram_max=0)
    cfg = arch.engine.config.replace(draft_length=6, span_stop="chunk_end", **extra)
    dec = NestDecoder(arch.lm, cfg)
    dec.acceptor = acceptor
    return dec


@pytest.mark.parametrize("ngram", [False, True], ids=["knn", "ngram"])
@pytest.mark.parametrize("pattern", [[0], [1, 3], [2, 0, 6], [5, 1, 0, 2]], ids=str)
def test_kv_cache_after_accept_reject_pattern_equals_fresh_forward(arch: Arch, pattern, ngram) -> None:
    model = arch.lm.model
    dec = _decoder(arch, _ScriptedAcceptor(pattern), ngram)
    committed = [t.token for step in dec.run(arch.prompt_ids, _store(arch), NEW_TOKENS) for t in step]
    assert len(committed) == NEW_TOKENS
    assert dec.stats.drafts >= 2 and dec.stats.tokens_drafted > dec.stats.tokens_accepted  # rejections happened
    cache = dec.cache
    n_cached = cache.get_seq_length()
    full = arch.prompt_ids + committed
    assert len(full) - n_cached in (0, 1)  # the committed text, except at most one pending token
    # feed the pending token (if any) and one more on the cache; a sliding-window layer can only drop tokens of its
    # last forward, so the check extends the text instead of cropping it
    full.append(arch.greedy[0])
    with torch.inference_mode():
        dev = arch.lm.device
        out = model(
            input_ids=torch.tensor([full[n_cached:]], device=dev), use_cache=True, **{cache_kwarg(model): cache}
        ).logits[0]
        fresh = model(input_ids=torch.tensor([full], device=dev)).logits[0, n_cached:]
    assert torch.allclose(out, fresh, atol=1e-4)


@pytest.mark.parametrize("ngram", [False, True], ids=["knn", "ngram"])
def test_one_forward_per_verification_counted_by_hook(arch: Arch, ngram) -> None:
    model = arch.lm.model
    log: list[tuple[str, int]] = []
    handle = model.register_forward_pre_hook(
        lambda m, args, kwargs: log.append(("forward", int(kwargs["input_ids"].shape[1]))), with_kwargs=True
    )
    try:
        dec = _decoder(arch, _ScriptedAcceptor([3, 1, 0, 6, 2], log), ngram)
        out = [t for step in dec.run(arch.prompt_ids, _store(arch), NEW_TOKENS) for t in step]
    finally:
        handle.remove()
    forwards = [n for kind, n in log if kind == "forward"]
    assert len(forwards) == dec.stats.forward_passes
    assert log[0] == ("forward", len(arch.prompt_ids))  # the prefill
    verifications = [i for i, (kind, _) in enumerate(log) if kind == "verify"]
    assert len(verifications) == dec.stats.drafts >= 3
    for i in verifications:
        kind, fed = log[i - 1]
        n = log[i][1]
        # the n-token draft was fed in the one forward just before (with at most one pending token)
        assert kind == "forward" and fed in (n, n + 1)
    assert max(n for kind, n in log if kind == "verify") > 1
    assert dec.stats.tokens_accepted > 0 and dec.stats.forward_passes < len(out)
    assert (dec.stats.ngram_anchors > 0) == ngram


def test_copied_spans_are_exact(arch: Arch) -> None:
    res = _generate(arch, draft_length=8, gamma=0.0)  # γ = 0 accepts every draft: every family copies
    assert res.spans
    docs = {d.doc_id: d.text for d in arch.documents}
    chunks = {c.chunk_id: c for c in arch.engine.chunks}
    for s in res.spans:
        ch = chunks[s.chunk_id]
        assert docs[s.doc_id][s.doc_start : s.doc_end] == s.text
        assert ch.text[s.doc_start - ch.doc_offset : s.doc_end - ch.doc_offset] == s.text
        assert res.text[s.response_start : s.response_end] == s.text
    assert any(c.doc_offset > 0 for c in arch.engine.chunks)  # documents in several chunks


# ---- models whose cache cannot be rolled back ------------------------------------------------------------------


def _lm(model, tok) -> LoadedModel:
    return LoadedModel(model=model.eval(), tokenizer=tok, model_id="tiny", path=Path("."), dtype="float32")


@pytest.mark.parametrize(
    "config_cls, model_cls, fields, model_type",
    [
        ("MambaConfig", "MambaForCausalLM", dict(hidden_size=32, state_size=4, num_hidden_layers=2), "mamba"),
        (
            "Qwen3NextConfig",
            "Qwen3NextForCausalLM",
            dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                num_key_value_heads=1,
                head_dim=16,
                linear_num_value_heads=2,
                linear_num_key_heads=1,
                linear_key_head_dim=8,
                linear_value_head_dim=8,
                num_experts=2,
                num_experts_per_tok=1,
                moe_intermediate_size=16,
                shared_expert_intermediate_size=16,
                layer_types=["linear_attention", "full_attention"],
            ),
            "qwen3_next",
        ),
    ],
    ids=["mamba", "qwen3_next"],
)
def test_model_with_a_recurrent_cache_is_refused_before_decoding(
    tokenizer, config_cls, model_cls, fields, model_type
) -> None:
    import transformers

    config = getattr(transformers, config_cls)(vocab_size=len(tokenizer), **fields)
    lm = _lm(getattr(transformers, model_cls)(config), tokenizer)
    with pytest.raises(UnsupportedModelError, match=model_type) as err:
        NestDecoder(lm, NestConfig(method="nest"))
    assert "rolled back" in str(err.value) and isinstance(err.value, ValueError)
    # through the engine too: refused when the engine is built, before any request
    with pytest.raises(UnsupportedModelError, match=model_type):
        NestEngine(lm, chunks_from_documents([Document("d", "alpha beta gamma. " * 5)]), NestConfig(**_LOOP_ONLY))


def test_non_croppable_cache_layer_is_refused_after_the_prefill() -> None:
    """A linear-attention layer only knows it holds a recurrent state once initialised (transformers checks
    ``Cache.is_croppable`` after the prefill): the loop checks it there, before the first token."""
    cache_utils = pytest.importorskip("transformers.cache_utils")
    if not hasattr(cache_utils, "LinearAttentionLayer"):
        pytest.skip("this transformers has no linear-attention cache layers")
    Cache, DynamicLayer, LinearAttentionLayer = (
        cache_utils.Cache,
        cache_utils.DynamicLayer,
        cache_utils.LinearAttentionLayer,
    )

    linear = LinearAttentionLayer()
    cache = Cache(layers=[DynamicLayer(), linear])

    class _Model:
        config = type("C", (), {"model_type": "hybrid_linear"})()

    conv_only = LinearAttentionLayer()  # a convolution state alone can be cropped (e.g. LFM2's conv layers)
    conv_only.activate_past_recording()
    conv_only.update_conv_state(torch.zeros(1, 4, 3))
    check_croppable(Cache(layers=[DynamicLayer(), conv_only]), _Model())
    linear.update_recurrent_state(torch.zeros(1, 2, 4, 4))
    with pytest.raises(UnsupportedModelError, match="hybrid_linear.*LinearAttentionLayer"):
        check_croppable(cache, _Model())


def test_sliding_window_cache_rolls_back_past_the_window() -> None:
    """The bug of issue 12: a sliding-window layer past its window could not be cropped."""
    import transformers

    torch.manual_seed(0)
    config = transformers.MistralConfig(vocab_size=1000, **FAMILIES["mistral"][2])
    model = transformers.MistralForCausalLM(config).eval()
    cache = new_cache(model)
    kw = cache_kwarg(model)
    seq = torch.randint(0, 1000, (1, 3 * WINDOW))
    with torch.inference_mode():
        model(input_ids=seq[:, : 2 * WINDOW], use_cache=True, **{kw: cache})
        crop_cache(cache, 2 * WINDOW)
        model(input_ids=seq[:, 2 * WINDOW :], use_cache=True, **{kw: cache})  # a draft of WINDOW tokens …
        crop_cache(cache, 2 * WINDOW + 2)  # … rejected after two
        out = model(input_ids=seq[:, 2 * WINDOW + 2 : 2 * WINDOW + 3], use_cache=True, **{kw: cache}).logits[0, -1]
        fresh = model(input_ids=seq[:, : 2 * WINDOW + 3]).logits[0, -1]
    assert cache.get_seq_length() == 2 * WINDOW + 3
    assert torch.allclose(out, fresh, atol=1e-4)


def test_no_vocabulary_sized_tensor_leaves_the_device(arch: Arch, monkeypatch) -> None:
    """GPU-ready loop (issue 12): p_M, argmax and acceptance stay where the logits are; only scalars come back.

    Every host read of a tensor (``.cpu()``, ``.numpy()``, ``.tolist()``, ``.item()``) during decoding is
    recorded; none may be as large as the vocabulary (on a GPU each would be a sync and a large copy per step).
    """
    vocab = int(arch.lm.model.config.vocab_size)
    reads: list[tuple[str, int]] = []

    def spy(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *a, **k):
            reads.append((name, int(self.numel())))
            return original(self, *a, **k)

        return wrapper

    for name in ("cpu", "numpy", "tolist", "item"):
        monkeypatch.setattr(torch.Tensor, name, spy(name))
    runs = [_generate(arch, acceptance="lossless"), _generate(arch, gamma=0.1, sentence_source="chunk")]
    monkeypatch.undo()
    assert all(r.stats.tokens_accepted > 0 and len(r.token_ids) == NEW_TOKENS for r in runs)
    big = [r for r in reads if r[1] >= vocab]
    assert not big, f"{len(big)} vocabulary-sized host reads, e.g. {big[:3]}"
