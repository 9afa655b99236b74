"""One-command device check (issue 12): the device-sensitive tests and a speed benchmark on the device found.

    python benchmarks/device_check.py                      # cuda when a GPU is visible, else cpu
    python benchmarks/device_check.py --device cpu --out docs/results/device-check-cpu

1. **Tests on the device.** The architecture matrix (10 families: λ = 1 and lossless NEST equal greedy
   ``generate``, the KV cache after accept/reject patterns equals a fresh forward, one forward per verification,
   exact spans, no vocabulary-sized tensor read back to the host), the key-layer tap and the model fingerprint,
   run by pytest with ``NEST_TEST_DEVICE`` set to the device (tests/decoding/test_architectures.py reads it).
2. **Speed on the device**, against transformers greedy ``generate`` in the same process and dtype:
   a randomly initialised Llama of realistic size (``--size``: on a GPU 1.1B parameters by default — no real
   weights need to be on the machine, only the default model's tokenizer files, ``--tokenizer``), prompts of
   ``--prompt-tokens`` tokens, ``--new-tokens`` new tokens, interleaved, one warm-up each:
   - ``base loop``: the NEST engine with ``method="base"`` (the loop alone: per-step overhead vs ``generate``);
   - ``lossless, copy``: lossless NEST over a token store that holds the model's own greedy continuation with one
     token in 8 changed (drafts accepted up to each change, rejected there: the verification speedup the device
     gives when the corpus holds the text);
   - ``lossless, no copy``: the same over unrelated text (what drafts cost when they are rejected).
   Outputs equal to ``generate`` are counted (lossless must give the same tokens; in bf16/fp16 a batched
   verification may differ from one-token steps at near-ties, so the count is reported, not asserted).
3. The default dtype chosen for the device (:func:`nest_integrations.models.resolve_dtype`).

Writes ``<out>.json`` and ``<out>.txt`` (default ``docs/results/device-check-<device kind>``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nest_integrations import Document, NestConfig, NestEngine  # noqa: E402
from nest_integrations.chunks import chunks_from_documents  # noqa: E402
from nest_integrations.decoding.loop import NestDecoder  # noqa: E402
from nest_integrations.models import LoadedModel, default_model_dir, resolve_device, resolve_dtype  # noqa: E402

DEVICE_TESTS = ["tests/decoding/test_architectures.py", "tests/test_key_layer.py", "tests/test_models.py"]
SIZES: dict[str, dict[str, int]] = {
    # name: Llama config fields (vocabulary: the tokenizer's, 49,152 for the default one)
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3),
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8),
}


def run_tests(device: str) -> dict[str, Any]:
    """pytest on the device-sensitive tests with ``NEST_TEST_DEVICE=device``; counts by outcome."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        env = dict(os.environ, NEST_TEST_DEVICE=device)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *DEVICE_TESTS],
            cwd=ROOT, env=env, capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        counts = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
        failures: list[str] = []
        if xml.exists():
            for case in ET.parse(xml).getroot().iter("testcase"):
                kinds = [c.tag for c in case]
                if "failure" in kinds:
                    counts["failed"] += 1
                    failures.append(f"{case.get('classname')}::{case.get('name')}")
                elif "error" in kinds:
                    counts["error"] += 1
                    failures.append(f"{case.get('classname')}::{case.get('name')}")
                elif "skipped" in kinds:
                    counts["skipped"] += 1
                else:
                    counts["passed"] += 1
    tail = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
    return {"files": DEVICE_TESTS, "returncode": proc.returncode, "wall_s": round(wall, 1), **counts,
            "failures": failures, "summary": tail[0] if tail else ""}  # fmt: skip


def random_llama(tokenizer_dir: Path, size: str, dtype: str, device: str) -> LoadedModel:
    """A randomly initialised Llama of ``size`` with the tokenizer in ``tokenizer_dir``, on ``device``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    cfg = LlamaConfig(
        vocab_size=len(tok), max_position_embeddings=4096, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id, tie_word_embeddings=True, initializer_range=0.05, **SIZES[size],
    )  # fmt: skip
    torch.manual_seed(0)
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(torch_dtype).eval()
    n = sum(p.numel() for p in model.parameters())
    return LoadedModel(model=model, tokenizer=tok, model_id=f"random-llama-{size} ({n / 1e6:.0f}M)", path=Path("."), dtype=dtype)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def greedy(lm: LoadedModel, prompt_ids: list[int], n: int) -> list[int]:
    ids = torch.tensor([prompt_ids], device=lm.device)
    with torch.inference_mode():
        out = lm.model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n, do_sample=False,
            pad_token_id=lm.tokenizer.eos_token_id,
        )  # fmt: skip
    return out[0, len(prompt_ids) :].tolist()


def speed(lm: LoadedModel, device: str, prompts: int, prompt_tokens: int, new_tokens: int) -> dict[str, Any]:
    """Interleaved seconds per request of greedy ``generate`` and three NEST configurations (see the module doc)."""
    tok = lm.tokenizer
    vocab = [i for i in range(len(tok)) if tok.decode([i]).strip().isalpha()][:20000]
    gen = torch.Generator().manual_seed(1)
    cases = []
    for _ in range(prompts + 1):  # the first is the warm-up
        prompt = [vocab[int(j)] for j in torch.randint(len(vocab), (prompt_tokens,), generator=gen)]
        cont = greedy(lm, prompt, new_tokens)
        altered = [t if k % 8 != 5 else vocab[(vocab.index(t) + 7) % len(vocab)] if t in vocab else vocab[0]
                   for k, t in enumerate(cont)]  # fmt: skip
        unrelated = [vocab[int(j)] for j in torch.randint(len(vocab), (new_tokens,), generator=gen)]
        cases.append((prompt, cont, tok.decode(altered), tok.decode(unrelated)))
    loop_cfg = NestConfig(method="nest", acceptance="lossless", retriever="bm25", key_layer=0, sentence_source="any",
                          word_boundaries=False, min_citation_words=1, max_new_tokens=new_tokens)  # fmt: skip
    systems = ["generate", "base loop", "lossless, copy", "lossless, no copy"]
    times: dict[str, list[float]] = {s: [] for s in systems}
    same: dict[str, int] = {s: 0 for s in systems}
    fwd: dict[str, list[float]] = {s: [] for s in systems}
    for i, (prompt, cont, altered, unrelated) in enumerate(cases):
        # the token stores are built before the clock starts (keys of the store text: one batched forward)
        stores = {}
        for name, text in (("lossless, copy", altered), ("lossless, no copy", unrelated)):
            eng = NestEngine(lm, chunks_from_documents([Document("d", text)], chunk_size=100_000), loop_cfg)
            stores[name] = eng.token_store.request_view([0], [eng.chunks[0].text], device=lm.device)
        order = systems[i % len(systems) :] + systems[: i % len(systems)]  # rotation: no system always runs first
        for name in order:
            _sync(device)
            t0 = time.perf_counter()
            if name == "generate":
                out = greedy(lm, prompt, new_tokens)
                passes = float(new_tokens)
            else:
                dec = NestDecoder(lm, loop_cfg)
                store = None if name == "base loop" else stores[name]
                out = [c.token for step in dec.run(prompt, store, new_tokens) for c in step]
                passes = float(dec.stats.forward_passes)
            _sync(device)
            dt = time.perf_counter() - t0
            if i == 0:
                continue  # warm-up
            times[name].append(dt)
            fwd[name].append(passes / max(1, len(out)))
            same[name] += out[:new_tokens] == cont
    ref = statistics.median(times["generate"])
    rows = {}
    for name in systems:
        med = statistics.median(times[name])
        rows[name] = {"s_per_request_median": round(med, 4), "vs_generate": round(med / ref, 3),
                      "tokens_per_s": round(new_tokens / med, 1), "forwards_per_token": round(statistics.mean(fwd[name]), 3),
                      "same_tokens_as_generate": f"{same[name]}/{prompts}"}  # fmt: skip
    return {"prompts": prompts, "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "systems": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto (cuda when visible, else cpu), cpu, cuda, cuda:1, ...")
    ap.add_argument("--dtype", default="auto", help="auto (the library's per-device default) or a dtype name")
    ap.add_argument("--size", choices=list(SIZES), default=None, help="random model size (default: 1b on GPU, 135m on CPU)")
    ap.add_argument("--tokenizer", type=Path, default=None, help="tokenizer directory (default: the default model's)")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="output path without suffix")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    kind = device.split(":")[0]
    dtype = resolve_dtype(args.dtype, device)
    size = args.size or ("1b" if kind == "cuda" else "135m")
    tok_dir = args.tokenizer or default_model_dir()
    if not (tok_dir / "tokenizer.json").exists():
        raise SystemExit(f"no tokenizer in {tok_dir}: run `nest download-model` or pass --tokenizer DIR")
    out = args.out or ROOT / "docs" / "results" / f"device-check-{kind}"
    report: dict[str, Any] = {
        "command": "python benchmarks/device_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": device,
        "device_name": torch.cuda.get_device_name(device) if kind == "cuda" else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "default_dtype": dtype,
    }
    if not args.skip_tests:
        print(f"device tests on {device} …", flush=True)
        report["tests"] = run_tests(device)
        print(f"  {report['tests']['summary']}", flush=True)
    print(f"speed: random Llama {size} in {dtype} on {device} …", flush=True)
    lm = random_llama(tok_dir, size, dtype, device)
    report["model"] = lm.model_id
    report["speed"] = speed(lm, device, args.prompts, args.prompt_tokens, args.new_tokens)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"# {report['command']}", f"device {device} ({report['device_name']}), torch {report['torch']}, "
             f"{report['cpu_threads']} CPU threads, default dtype {dtype}"]  # fmt: skip
    if "tests" in report:
        t = report["tests"]
        lines.append(f"tests ({', '.join(t['files'])}): {t['passed']} passed, {t['failed']} failed, "
                     f"{t['error']} errors, {t['skipped']} skipped in {t['wall_s']} s")  # fmt: skip
        lines += [f"  FAILED {f}" for f in t["failures"]]
    sp = report["speed"]
    lines.append(f"speed: {lm.model_id}, {dtype}, {sp['prompts']} prompts of {sp['prompt_tokens']} tokens, "
                 f"{sp['new_tokens']} new tokens, median s/request")  # fmt: skip
    lines.append(f"{'system':<20} {'s/req':>8} {'vs generate':>12} {'tok/s':>8} {'fwd/tok':>8} {'= generate':>11}")
    for name, r in sp["systems"].items():
        lines.append(f"{name:<20} {r['s_per_request_median']:>8.3f} {r['vs_generate']:>12.3f} {r['tokens_per_s']:>8.1f} "
                     f"{r['forwards_per_token']:>8.3f} {r['same_tokens_as_generate']:>11}")  # fmt: skip
    text = "\n".join(lines) + "\n"
    out.with_suffix(".txt").write_text(text)
    print(text)
    failed = "tests" in report and (report["tests"]["failed"] or report["tests"]["error"] or report["tests"]["returncode"])
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
