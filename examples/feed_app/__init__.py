"""Demo feed app embedding the device runtime: a loopback web page of reranked cards (examples/README.md).

    python -m examples.feed_app --slates POOL --bundle BUNDLE [--server http://127.0.0.1:8000]

`feed.FeedApp` holds the state (bundle, reranker, slate, clicks, notices), `server.FeedServer` serves the
page and its JSON API, `slates` reads slates from a pool folder or the cloud service, and `build_pool`
(cloud side, needs torch) writes a pool from a trained run.
"""
