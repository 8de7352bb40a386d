"""The user-facing docs stay usable (issue 17, item 18): README.md is short enough to
read in one go, every relative link in README.md, docs/*.md and bench/results/README.md
reaches a file (and heading) that exists, and `make test-fast` deselects the e2e tests.

Text only: no TensorFlow import, so it runs in a fraction of a second."""
import glob
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
MAX_README_LINES = 200

# [text](target) and ![alt](target); the target stops at whitespace or ")".
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _pages():
    return [README, *sorted(glob.glob(os.path.join(REPO, "docs", "*.md"))),
            os.path.join(REPO, "bench", "results", "README.md")]


def _anchors(path):
    """GitHub's heading ids: lower case, punctuation but '-' and '_' dropped, spaces -> '-'."""
    text = FENCE.sub("", _read(path))
    ids = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        ids.add(slug)
    return ids


def _relative_links(path):
    text = FENCE.sub("", _read(path))  # a code block's brackets are not links
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:, ...
            continue
        yield target


def test_readme_is_at_most_200_lines():
    lines = _read(README).count("\n")
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines (> {MAX_README_LINES}): move detail to docs/ or "
        "bench/results/README.md and link it")


def test_every_relative_link_resolves():
    broken = []
    for page in _pages():
        for target in _relative_links(page):
            file_part, _, anchor = target.partition("#")
            resolved = (os.path.normpath(os.path.join(os.path.dirname(page), file_part))
                        if file_part else page)
            where = f"{os.path.relpath(page, REPO)}: {target}"
            if not os.path.exists(resolved):
                broken.append(f"{where} (no such file)")
            elif anchor and resolved.endswith(".md") and anchor not in _anchors(resolved):
                broken.append(f"{where} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_readme_links_every_doc_page():
    """Nothing moved out of the README is orphaned: each docs/ page is linked from it."""
    linked = {os.path.normpath(t.partition("#")[0]) for t in _relative_links(README)}
    for page in glob.glob(os.path.join(REPO, "docs", "*.md")):
        assert os.path.relpath(page, REPO) in linked, f"README.md does not link {page}"
    assert os.path.join("bench", "results", "README.md") in linked


def _recipe(makefile, target):
    match = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", makefile, re.M)
    assert match, f"the Makefile has no `{target}` target"
    return match.group(1)


def test_make_test_fast_deselects_the_e2e_tests():
    makefile = _read(os.path.join(REPO, "Makefile"))
    fast = _recipe(makefile, "test-fast")
    assert "pytest" in fast and re.search(r"-m\s+['\"]not e2e['\"]", fast), fast
    assert "e2e" not in _recipe(makefile, "test"), "`make test` (CI) must run everything"
    assert re.search(r"^\s*\"e2e:", _read(os.path.join(REPO, "pyproject.toml")), re.M), (
        "the e2e marker is not registered in pyproject.toml")


def test_ci_runs_the_readmes_test_command():
    assert re.search(r"^make test$", _read(os.path.join(REPO, ".ci", "run")), re.M)
    readme = _read(README)
    assert "make test " in readme and "make test-fast" in readme
