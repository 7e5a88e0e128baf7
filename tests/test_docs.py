"""Docs that are derived from the code must not drift from it."""
import subprocess
import sys

from lightrail.cli.catalog import matrix_markdown
from lightrail.settings import ROOT


def test_readme_support_matrix_matches_the_catalog():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- matrix:start -->\n")[1].split("\n<!-- matrix:end -->")[0]
    assert table == matrix_markdown(), "README matrix is stale: paste `invoke patterns --output=markdown`"


def test_pattern_pages_are_up_to_date():
    proc = subprocess.run([sys.executable, "scripts/gen_pattern_docs.py", "--check"], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_task_has_help_and_docs():
    import tasks

    docs = (ROOT / "README.md").read_text() + "".join(p.read_text() for p in (ROOT / "docs").rglob("*.md"))
    names = []
    for name, coll in [("", tasks.ns), *[(n + ".", c) for n, c in tasks.ns.collections.items()]]:
        for task_name, task in coll.tasks.items():
            full = f"{name}{task_name}"
            names.append(full)
            assert (task.__doc__ or "").strip(), f"task {full} has no docstring (shown by --help)"
            shown = full if not task_name == coll.default else name.rstrip(".")
            assert f"invoke {shown}" in docs or f"invoke {full}" in docs, f"task {full} is not documented in docs/"
    assert {"patterns", "plan", "render", "test"} <= set(names)
