"""featx serve: a bundle as a web service (HTTP API, dynamic batching, a try-it page)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from featx.cli import app, err, warn
from featx.cli.fit import REJECT_OPTION, UNFAMILIAR_AT_OPTION


@app.command()
def serve(
    bundle: Path = typer.Argument(..., help="A model bundle (from featx fit, finetune or baseline)."),
    store: Optional[Path] = typer.Option(
        None, "--store", help="Also show each photo's nearest photos of this store (made with "
        "the bundle's extractor), as thumbnails."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    token: Optional[str] = typer.Option(
        None, "--token", help="Require 'Authorization: Bearer TOKEN' (or set FEATX_TOKEN)."),
    max_batch: int = typer.Option(16, "--max-batch", help="Most photos in one model call."),
    max_wait_ms: float = typer.Option(
        5.0, "--max-wait-ms", help="How long a batch waits after its first photo for more."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", help="Largest request body (413)."),
    max_files: int = typer.Option(64, "--max-files", help="Most photos in one request (413)."),
    top_k: int = typer.Option(3, "--top-k", help="Classes listed per photo."),
    neighbors: int = typer.Option(6, "--neighbors", help="Stored photos shown per photo (--store)."),
    reject: bool = REJECT_OPTION,
    unfamiliar_at: Optional[float] = UNFAMILIAR_AT_OPTION,
    weights: Optional[str] = typer.Option(
        None, help="Where the bundle's weights file is now, if it moved."),
    engine: str = typer.Option("local", "--engine", help="local (uvicorn) or ray (Ray Serve)."),
    replicas: int = typer.Option(1, "--replicas", help="Ray Serve replicas (--engine ray)."),
    address: Optional[str] = typer.Option(
        None, "--address", help="Ray cluster to join (--engine ray; default: a local instance)."),
) -> None:
    """Serve a bundle: POST /v1/predict (photos -> featx predict's JSON), GET /v1/info, /healthz,
    /readyz, and a page at / to try it. Ctrl-C or SIGTERM drain the requests in flight."""
    from featx.errors import FeatxError
    from featx.serve import ServeSettings
    from featx.web import host_warning, resolve_token
    from featx.web.runner import check_port

    if engine not in ("local", "ray"):
        raise FeatxError(f"unknown `engine` {engine!r}; choose local or ray")
    if replicas < 1:
        raise FeatxError(f"`replicas` must be at least 1, got {replicas}")
    settings = ServeSettings(max_batch=max_batch, max_wait_ms=max_wait_ms,
                             max_upload_mb=max_upload_mb, max_files=max_files, top_k=top_k,
                             neighbors=neighbors, reject=reject,
                             unfamiliar_at=unfamiliar_at).check()
    token = resolve_token(token)
    check_port(host, port)
    warning = host_warning(host, token)
    if warning:
        warn(warning)
    url = f"http://{host}:{port}"
    if engine == "ray":
        from featx.serve_ray import run_ray

        run_ray(bundle, store, settings, weights, token, host, port, replicas, address,
                ready=lambda: err.print(f"featx: serving {bundle} on {url} with {replicas} Ray "
                                        f"Serve replica(s) (Ctrl-C stops)", markup=False))
        return
    from featx.serve import create_serve_app
    from featx.web import run_server

    server_app = create_serve_app(bundle, store, settings, weights, token)
    err.print(f"featx: serving {bundle} on {url} (ready at {url}/readyz once the model is "
              f"warm; Ctrl-C stops)", markup=False, highlight=False)
    run_server(server_app, host, port)
    err.print("featx: stopped", markup=False)
    # drained and stopped: skip the interpreter's teardown of TensorFlow (seconds on a busy box)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
