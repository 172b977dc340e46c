"""Device runtime of the DIR reranking SDK: runs on phones and Raspberry Pis, never imports torch.

`store`: SQLite history of behaviours, cached item vectors and exposures (`HistoryStore`);
`merge`: merges per-source scores into one list under a target exposure share (`merge`);
`backends`: ExecuTorch / TFLite inference; `bundle`: model bundle install and rollback;
`reranker`: the facade tying them together; `cli`: the `dir-device` command.
"""

from device_runtime.reranker import Reranker

__all__ = ["Reranker"]
