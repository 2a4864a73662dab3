"""featx review: a local page to look at the suspects, fix their labels and refit."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from featx.cli import app, emit, err, out, warn
from featx.cli.fit import SPLIT_OPTION, SPLIT_SEED_OPTION


@app.command()
def review(
    store: Path = typer.Argument(..., help="A featx feature store (.h5)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback by default)."),
    port: int = typer.Option(8765, "--port", help="TCP port."),
    token: Optional[str] = typer.Option(
        None, "--token", help="Require this token (or set FEATX_TOKEN); open the page with ?token=."),
    write_folders: Optional[Path] = typer.Option(
        None, "--write-folders", help="Write a corrected copy of the folder tree as links to DIR "
        "and exit (the photo folders are never touched)."),
    C: Optional[float] = typer.Option(
        None, "--C", help="The head's C [default: featx fit's automatic choice, made once]."),
    scale: Optional[str] = typer.Option(
        None, "--scale", help="none or l2 [default: featx fit's automatic choice, made once]."),
    map_method: str = typer.Option("tsne", "--map-method", help="The map: tsne or pca."),
    split: str = SPLIT_OPTION,
    split_seed: int = SPLIT_SEED_OPTION,
    as_json: bool = typer.Option(
        False, "--json", help="With --write-folders: print one JSON document on stdout."),
) -> None:
    """Review a store's suspects in a local web page: relabel, exclude or keep them (kept in
    FILE.h5.labels.csv, applied by every command), refit in seconds, see the map."""
    from featx.review import Review, Settings, write_folders as write_copy
    from featx.split import parse_fractions

    if write_folders is not None:
        copy = write_copy(store, write_folders)
        emit(copy.as_dict(), as_json, lambda: out.print(
            f"{copy.dest}: {copy.linked} links ({copy.relabelled} relabelled, {copy.excluded} "
            f"excluded and left out{f', {copy.missing} to missing files' if copy.missing else ''})",
            markup=False))
        return
    from featx.web import host_warning, resolve_token, run_server
    from featx.web.review import create_review_app
    from featx.web.runner import check_port

    from featx.store import read_meta

    token = resolve_token(token)
    settings = Settings(C=C, scale=scale, map_method=map_method, fractions=parse_fractions(split),
                        split_seed=split_seed).check()
    read_meta(store)  # a featx store, before the port and the work
    check_port(host, port)
    warning = host_warning(host, token)
    if warning:
        warn(warning)
    session = Review(store, settings)
    url = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
    err.print(f"featx: reviewing {store} on {url} (Ctrl-C stops); corrections go to "
              f"{session.overview()['corrections_file']}", markup=False, highlight=False)
    run_server(create_review_app(session, token), host, port)
    err.print("featx: stopped", markup=False)
