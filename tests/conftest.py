"""Shared fixtures: `tiny_logs` (a small hand-made LOGS folder) and `tiny_data` (it, prepared).

    def test_something(tiny_logs, tiny_data):
        spec = read_spec(tiny_logs / "dataset.toml")
        data = PreparedData(tiny_data)

tiny_logs: 2 users, sources `video` (genre, emb dim 2) and `article` (topic, quality), n=3, t=4,
lag=1, list_mode "logged", 10 lists at distinct times (train 6, valid 2, test 2). List L3 shows four
videos (one over n), list L4's click comes 5 s after it was shown, and u1 clicks v4 at ts 700, the
same time list L7 is shown (a tie that must stay out of L7's history).
"""

from pathlib import Path

import pytest

TINY_TOML = """\
name = "tiny"
n = 3
t = 4
K = 2
lag = 1
list_mode = "logged"
negatives = 3
valid_fraction = 0.2
test_fraction = 0.2

[[sources]]
name = "video"
target_share = 0.6
categorical = [{name = "genre", vocab = 0}]
dense = [{name = "emb", dim = 2}]

[[sources]]
name = "article"
target_share = 0.4
categorical = [{name = "topic", vocab = 0}]
dense = [{name = "quality", dim = 1}]
"""

TINY_ITEMS = """\
item_id,source,genre,emb_0,emb_1,topic,quality
v1,video,drama,0.1,0.2,,
v2,video,comedy,0.3,-0.1,,
v3,video,drama,1.5,0.0,,
v4,video,,0.0,0.5,,
v5,video,news,-0.2,0.9,,
a1,article,,,,sport,0.7
a2,article,,,,tech,0.1
a3,article,,,,sport,0.4
a4,article,,,,politics,0.9
"""

TINY_EVENTS = """\
user_id,item_id,timestamp,label,list_id,position
u1,v1,100,1,,
u1,a1,110,1,,
u2,a2,120,1,,
u1,v2,200,1,L1,0
u1,a2,200,0,L1,1
u1,v3,200,0,L1,2
u2,v1,300,0,L2,0
u2,a3,300,1,L2,1
u1,v5,400,0,L3,3
u1,v4,400,0,L3,0
u1,v1,400,1,L3,1
u1,v2,400,0,L3,2
u1,a4,400,0,L3,4
u2,a1,500,0,L4,0
u2,v3,505,1,L4,1
u1,a3,600,1,L5,0
u1,v5,600,0,L5,1
u2,v2,650,0,L6,0
u2,a4,650,1,L6,1
u1,v4,700,1,,
u1,v3,700,0,L7,0
u1,a2,700,1,L7,1
u2,v5,800,1,L8,0
u2,a1,800,0,L8,1
u1,v1,900,0,L9,0
u1,a1,900,1,L9,1
u2,v4,1000,1,L10,0
u2,a3,1000,0,L10,1
"""


def write_logs(
    folder: Path, toml: str = TINY_TOML, items: str = TINY_ITEMS, events: str = TINY_EVENTS, users: str | None = None
) -> Path:
    """Write a LOGS folder from file texts; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.toml").write_text(toml, encoding="utf-8")
    (folder / "items.csv").write_text(items, encoding="utf-8")
    (folder / "events.csv").write_text(events, encoding="utf-8")
    if users is not None:
        (folder / "users.csv").write_text(users, encoding="utf-8")
    return folder


@pytest.fixture
def tiny_logs(tmp_path: Path) -> Path:
    """A small hand-made LOGS folder (see the module docstring)."""
    return write_logs(tmp_path / "logs")


@pytest.fixture
def tiny_data(tiny_logs: Path) -> Path:
    """tiny_logs prepared into a DATA folder."""
    from cloud.data.prepare import prepare

    out = tiny_logs.parent / "data"
    prepare(tiny_logs, out)
    return out
