"""The documentation site builds strictly (no broken link, no page left out of the nav), its generated
tables are filled from the registries, and the README links every page."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def _nav_pages() -> list[str]:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    return [page for item in config["nav"] for page in item.values()]


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)


def test_the_site_builds_strictly_with_its_tables_generated(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs comes with the dev extra")
    result = _build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    cli = (tmp_path / "site" / "cli" / "index.html").read_text()
    extending = (tmp_path / "site" / "extending" / "index.html").read_text()
    architecture = (tmp_path / "site" / "architecture" / "index.html").read_text()
    assert "tether:" not in cli + extending + architecture   # every marker replaced
    for command in ("tether train sft", "tether train rloo", "tether align character-first", "tether redteam attacker"):
        assert command in cli
    assert "apo-zero" in extending and "normalize" in extending            # the variants and their knobs
    assert "preference loss" in architecture and "tether.world.scoring" in architecture


def test_a_broken_link_fails_the_strict_build(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs comes with the dev extra")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[gone](nowhere.md)\n")
    config = tmp_path / "mkdocs.yml"
    config.write_text(f"site_name: t\ndocs_dir: {docs}\nstrict: true\n")
    result = _build(config, tmp_path / "site")
    assert result.returncode != 0 and "nowhere.md" in result.stdout + result.stderr


def test_every_page_is_in_the_nav_and_linked_from_the_readme():
    pages = _nav_pages()
    on_disk = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    assert sorted(pages) == on_disk
    readme_links = set(re.findall(r"\]\(docs/([\w.-]+\.md)(?:#[\w-]+)?\)", (ROOT / "README.md").read_text()))
    assert set(pages) - {"index.md"} <= readme_links, set(pages) - readme_links


def test_every_generated_table_is_what_its_committed_raw_output_gives(docs_tables):
    tables = docs_tables
    marked = 0
    for page in sorted((ROOT / "docs").glob("*.md")):
        text = page.read_text()
        marked += text.count("<!-- table:")
        assert tables.rendered(text) == text, f"{page.name}: run python docs/results/tables.py render"
    assert marked >= len(tables.RENDERERS)  # every renderer's table is on some page
    for source, _ in tables.RENDERERS.values():
        loaded = tables._load(source)
        for doc in loaded if isinstance(loaded, list) else [loaded]:
            command = doc.get("command") or doc["environment"]["command"]  # bench scripts keep it with the machine
            assert command and doc["environment"]["machine"]["cores"]  # how and where it was measured


def test_the_stated_fingerprints_are_the_builds_the_main_job_table_was_measured_on():
    import json

    stated = json.loads((ROOT / "src" / "tether" / "world" / "fingerprints.json").read_text())
    measured = json.loads((ROOT / "docs" / "results" / "run_world_seeds.json").read_text())
    runs, where = measured["runs"], measured["environment"]["machine"]
    small = {entry["seed"]: entry for entry in stated.values() if entry["size"] == "small"}
    assert all((e["cpu"], e["cpu_capability"]) == (where["cpu"], where["cpu_capability"]) for e in small.values())
    assert sorted(small) == sorted(int(seed) for seed in runs)
    for seed, run in runs.items():
        built = run["stages"]["base"]["fingerprint"]
        assert {k: small[int(seed)][k] for k in built} == built, seed
