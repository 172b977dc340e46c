"""The README's documentation table links every document under docs/ and the files it names exist;
examples/README.md names only make targets and output folders the Makefile has."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_readme_links_every_doc_and_every_link_exists():
    readme = (REPO / "README.md").read_text()
    links = set(re.findall(r"\]\(([^)#]+)\)", readme))
    docs = {str(p.relative_to(REPO)) for p in (REPO / "docs").rglob("*.md")}
    assert not docs - links, f"README.md's documentation table misses {sorted(docs - links)}"
    missing = [link for link in links if "://" not in link and not (REPO / link).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"
    for name in ("LICENSE", "CHANGELOG.md"):
        assert name in links
    assert "Apache License" in (REPO / "LICENSE").read_text() and "Version 2.0" in (REPO / "LICENSE").read_text()


def test_packages_ship_py_typed():
    for package in ("shared_schema", "device_runtime", "cloud"):
        assert (REPO / package / "py.typed").is_file(), package
    assert "py.typed" in (REPO / "pyproject.toml").read_text()


def test_examples_readme_matches_the_makefile():
    makefile = (REPO / "Makefile").read_text()
    examples = (REPO / "examples" / "README.md").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.M))
    for target in re.findall(r"make ([a-z][a-z-]*)", examples):
        assert target in targets, f"examples/README.md runs `make {target}`, which the Makefile lacks"
    out = re.search(r"^OUT \?= (\S+)", makefile, flags=re.M)[1]
    feed = re.search(r"^FEED := \$\(OUT\)/(\S+)", makefile, flags=re.M)[1]
    written = set(re.findall(r"\$\(OUT\)/([a-z_]+)", makefile))
    written |= {f"{feed}/{sub}" for sub in re.findall(r"\$\(FEED\)/([a-z_]+)", makefile)}
    for path in re.findall(rf"\b{out}/([a-z_]+(?:/[a-z_]+)?)", examples):
        assert path in written or path.split("/")[0] in written - {feed}, (
            f"examples/README.md names {out}/{path}, which the Makefile does not write"
        )


def test_example_train_config_holds_the_defaults_and_dirs_options():
    import dataclasses
    import inspect

    from cloud.models.dir import DIR
    from cloud.training.config import TrainConfig

    config = TrainConfig.from_file(REPO / "docs" / "train-config.toml")
    dir_defaults = {name: p.default for name, p in inspect.signature(DIR).parameters.items() if name != "spec"}
    assert {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.model_options.items()} == dir_defaults
    assert dataclasses.replace(config, model_options={}) == TrainConfig()
    documented = (REPO / "docs" / "training.md").read_text()
    for name in [f.name for f in dataclasses.fields(TrainConfig)] + list(dir_defaults):
        assert f"| `{name}` |" in documented, f"docs/training.md does not describe {name}"
