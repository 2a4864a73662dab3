"""parallel: which joblib backend runs a sweep's grid (loky, threading, ray or dask).

Each is joblib's own backend mechanism (``joblib.parallel_config``); ``ray`` and ``dask`` also need
a connection, made here when there is none: Ray through :func:`featx.engine_ray.session` (the
cluster named by ``RAY_ADDRESS``, else a local instance), Dask through a ``distributed.Client``
(the scheduler named by ``DASK_SCHEDULER_ADDRESS``, else threads in this process).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

from featx.errors import FeatxError

BACKENDS = ("loky", "threading", "ray", "dask")


def check_backend(name: str) -> None:
    """Before any work: a known backend whose library is installed."""
    if name not in BACKENDS:
        raise FeatxError(f"unknown `backend` {name!r}; choose one of: {', '.join(BACKENDS)}")
    if name == "ray":
        from featx.engine_ray import import_ray

        import_ray()
    if name == "dask":
        try:
            import distributed  # noqa: F401
        except ImportError:
            raise FeatxError("`backend`=dask needs dask.distributed, an optional extra: "
                             "pip install 'featx[dask]'") from None


@contextmanager
def joblib_backend(name: str, n_jobs: int) -> Iterator[str]:
    """Run the ``joblib.Parallel`` calls inside on backend ``name``; yields the ``return_as``
    the backend supports: results as they finish, except on Ray (a list, at the end)."""
    from joblib import parallel_config

    check_backend(name)
    if name == "ray":
        from ray.util.joblib import register_ray

        from featx.engine_ray import session

        with session():
            # joblib hands Ray's pool a 'context' argument that it ignores, with a warning
            logging.getLogger("ray.util.multiprocessing.pool").setLevel(logging.ERROR)
            register_ray()
            with parallel_config(backend="ray", n_jobs=n_jobs):
                yield "list"  # Ray's backend refuses generators
    elif name == "dask":
        with _dask_client(n_jobs), parallel_config(backend="dask", n_jobs=n_jobs):
            yield "generator_unordered"
    else:
        with parallel_config(backend=name, n_jobs=n_jobs):
            yield "generator_unordered"


@contextmanager
def _dask_client(n_jobs: int) -> Iterator[None]:
    """The current Dask client, the configured scheduler's, or ``n_jobs`` threads here."""
    import dask
    from distributed import Client, get_client

    try:
        get_client()
        yield
        return
    except ValueError:  # no client yet
        pass
    address = dask.config.get("scheduler-address", None)
    client = (Client(address) if address else
              Client(processes=False, n_workers=1, threads_per_worker=n_jobs, dashboard_address=None))
    try:
        yield
    finally:
        client.close()
