"""A small hand-made LOGS folder as file texts, and `write_logs` to write it (conftest.py's `tiny_logs`).

    from tests.helpers.logs import TINY_TOML, write_logs
    logs = write_logs(tmp_path / "logs", toml=TINY_TOML.replace("n = 3", "n = 4"))

The folder: 2 users, sources `video` (genre, emb dim 2) and `article` (topic, quality), n=3, t=4,
lag=1, list_mode "logged", 10 lists at distinct times (train 6, valid 2, test 2). List L3 shows four
videos (one over n), list L4's click comes 5 s after it was shown, and u1 clicks v4 at ts 700, the
same time list L7 is shown (a tie that must stay out of L7's history).

`random_logs` writes random LOGS instead: sources s0-s2 (SOURCES), many timestamp ties, "logged" or "sampled".
"""

import random
from pathlib import Path

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


SOURCES = {"s0": 4, "s1": 6, "s2": 5}  # items per source


def random_toml(mode: str, n: int = 3, t: int = 3, lag: int = 2, negatives: int = 6) -> str:
    sources = "".join(
        f'\n[[sources]]\nname = "{s}"\ntarget_share = {share}\ndense = [{{name = "x", dim = 1}}]\n'
        for s, share in zip(SOURCES, (0.5, 0.25, 0.25))
    )
    return (
        f'name = "rnd"\nn = {n}\nt = {t}\nlag = {lag}\nlist_mode = "{mode}"\nnegatives = {negatives}\n'
        f"valid_fraction = 0.2\ntest_fraction = 0.2\n{sources}"
    )


def random_logs(folder: Path, mode: str, seed: int = 0, **toml) -> Path:
    """Random LOGS: 5 users, 40 lists of 1-8 impressions, 80 plain clicks, timestamps in 0..40 (many ties)."""
    rng = random.Random(seed)
    items = [(f"{s}_{i}", s) for s, count in SOURCES.items() for i in range(count)]
    item_rows = ["item_id,source,x"] + [f"{item},{s},{rng.random():.3f}" for item, s in items]
    rows = []
    for _ in range(80):
        rows.append((f"u{rng.randrange(5)}", rng.choice(items)[0], rng.randrange(41), 1, "", ""))
    for k in range(40):
        user, shown = f"u{rng.randrange(5)}", rng.randrange(41)
        size = rng.randrange(1, 9)
        positions, shown_items = rng.sample(range(20), size), rng.sample(items, size)  # a list shows an item once
        for j in range(size):
            label = int(rng.random() < 0.3)
            position = "" if rng.random() < 0.2 else positions[j]
            rows.append((user, shown_items[j][0], shown + label * rng.randrange(3), label, f"L{k}", position))
    rng.shuffle(rows)
    events = ["user_id,item_id,timestamp,label,list_id,position"] + [",".join(map(str, r)) for r in rows]
    return write_logs(
        folder, toml=random_toml(mode, **toml), items="\n".join(item_rows) + "\n", events="\n".join(events) + "\n"
    )
