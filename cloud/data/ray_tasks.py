"""Run independent tasks on a Ray cluster (used for the shards of `prepare --ray`).

    results = run_on_ray(build_shard, jobs, items, address="auto", max_retries=3)

`shared` goes to the object store once and every task gets it. A task whose worker dies is re-run
up to `max_retries` times by Ray; a task that raises (bad input) is not retried, and its own error
(the same ValueError the one-machine path raises) is raised here. A task still lost after its
retries raises a RuntimeError that says so. The nodes must see the same files (the shard folder
lives beside DATA): a shared file system, see docs/distributed.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cloud.data.parquet import SCALE_HINT


def ray_module():
    """Import ray, or explain which extra provides it."""
    try:
        import ray
    except ImportError as exc:
        raise ImportError(f"ray is missing; prepare --ray needs it: {SCALE_HINT}") from exc
    return ray


def run_on_ray(fn: Callable, jobs: Sequence, shared: object, address: str, max_retries: int = 3) -> list:
    """fn(job, shared) for every job as Ray tasks; results in job order."""
    ray = ray_module()
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False)
        except ConnectionError as exc:
            raise ConnectionError(
                f"no Ray cluster at {address!r} ({exc}); start one with `ray start --head` "
                "(docs/distributed.md) or pass --ray local"
            ) from exc
    task = ray.remote(max_retries=max_retries, retry_exceptions=False)(fn)
    shared_ref = ray.put(shared)
    refs = [task.remote(job, shared_ref) for job in jobs]
    results = []
    try:
        for number, ref in enumerate(refs):
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, Exception):
                    raise cause from None
                raise
            except ray.exceptions.RayError as exc:
                raise RuntimeError(
                    f"shard {number}: its Ray task was lost {max_retries + 1} times ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0]}); the job failed and wrote nothing. Check the workers' memory "
                    "and logs (`ray logs`), then run prepare again"
                ) from exc
    except BaseException:
        for ref in refs:
            ray.cancel(ref, force=True)
        raise
    return results
