"""The cloud service (FastAPI): candidate slates with item vectors, vector refresh, model bundles.

    from cloud.service import BundleFolder, CloudService, create_app
    app = create_app(CloudService.load("out/run", "out/data"), BundleFolder("out/bundles"))

`state`: what the endpoints serve from (run, data, upstream ranker); `upstream`: the demo per-source
ranker; `bundles`: the bundles folder; `middleware`: body cap and Server-Timing; `app`: the routes.
Run it with `dir-cloud serve` (docs/service.md).
"""

from cloud.service.app import create_app
from cloud.service.bundles import BundleFolder
from cloud.service.state import CloudService

__all__ = ["BundleFolder", "CloudService", "create_app"]
