"""`invoke render`: validated output written all-or-nothing; bad input writes nothing."""
import os
import re
import subprocess
import sys

import pytest
import yaml

from lightrail.settings import ROOT, schemas_dir

needs_schemas = pytest.mark.skipif(schemas_dir() is None, reason="no upstream schemas: set LIGHTRAIL_SCHEMAS=DIR")


def invoke(*args, env=None):
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True, env=env)


@needs_schemas
def test_render_kserve_writes_valid_manifests_and_inputs(tmp_path):
    out = tmp_path / "caching"
    proc = invoke("render", "--pattern=caching", "--accel=tpu", "--stack=kserve", f"--out={out}")
    assert proc.returncode == 0, proc.stderr
    objects = list(yaml.safe_load_all((out / "manifests.yaml").read_text()))
    assert [o["kind"] for o in objects].count("LLMInferenceService") == 1
    assert (out / "kustomize" / "kustomization.yaml").exists()
    assert "rendered 7 objects, all valid" in proc.stdout
    # Rendering again into the same directory replaces what the first render wrote, nothing else.
    (out / "NOTES.md").write_text("mine")
    (out / "kustomize" / "my-extra.yaml").write_text("mine too")
    again = invoke("render", "--pattern=baseline", "--accel=sim", "--stack=kserve", f"--out={out}")
    assert again.returncode == 0, again.stderr
    assert not (out / "kustomize" / "caching-qwen2-5-3b-instruct").exists()
    assert (out / "kustomize" / "baseline-qwen2-5-3b-instruct" / "kustomization.yaml").exists()
    assert (out / "NOTES.md").read_text() == "mine" and (out / "kustomize" / "my-extra.yaml").read_text() == "mine too"
    # a file of the user's where the next render would write one of its own is refused, not overwritten
    theirs = out / "kustomize" / "caching-qwen2-5-3b-instruct" / "kustomization.yaml"
    theirs.parent.mkdir()
    theirs.write_text("the user's")
    refused = invoke("render", "--pattern=caching", "--accel=tpu", "--stack=kserve", f"--out={out}")
    assert refused.returncode == 1 and "which `invoke render` did not write" in refused.stderr
    assert theirs.read_text() == "the user's" and (out / "kustomize" / "baseline-qwen2-5-3b-instruct").exists()


@needs_schemas
@pytest.mark.parametrize("pattern,accel", [("multimodel", "gpu"), ("moe", "gpu"), ("baseline", "sim")])
def test_written_kustomize_tree_builds_by_hand_to_the_written_manifests(tmp_path, pattern, accel):
    """`kubectl kustomize OUT/kustomize` (default load restrictions, from another directory) gives manifests.yaml."""
    from lightrail.settings import TOOLS_BIN

    out = tmp_path / "out"
    proc = invoke("render", f"--pattern={pattern}", f"--accel={accel}", "--stack=kserve", f"--out={out}")
    assert proc.returncode == 0, proc.stderr
    moved = tmp_path / "elsewhere" / "copy"
    moved.parent.mkdir()
    (out / "kustomize").rename(moved)   # nothing may point back at the checkout or the scratch dir
    built = subprocess.run([str(TOOLS_BIN / "kubectl"), "kustomize", str(moved)], capture_output=True, text=True,
                           cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    assert list(yaml.safe_load_all(built.stdout)) == list(yaml.safe_load_all((out / "manifests.yaml").read_text()))


@needs_schemas
def test_render_llmd_offline_writes_the_helmfile_inputs(tmp_path):
    out = tmp_path / "mm"
    env = {k: v for k, v in os.environ.items() if k != "LIGHTRAIL_CHARTS"}   # offline means: no charts at hand
    proc = invoke("render", "--pattern=multimodel", "--accel=gpu", f"--out={out}", "--offline", env=env)
    assert proc.returncode == 0, proc.stderr
    state = yaml.safe_load((out / "helmfile" / "state.yaml").read_text())
    assert state["valuesDir"] == "values" and state["bodyBasedRouting"] is True
    assert (out / "helmfile" / "values" / "multimodel-bbr.yaml").exists()
    assert "offline: checked the helmfile state (6 releases)" in proc.stdout.replace("\n", " ")


@pytest.mark.parametrize("args,message", [
    (["--pattern=caching", "--accel=tpu", "--topology=9x9"], "unknown TPU v6e topology '9x9'; valid: 1x1, 2x2, 2x4, 4x4, 4x8"),
    (["--pattern=moe", "--accel=sim"], "pattern 'moe' is not supported on accel=sim"),
    # tpu-inference v0.26.0 places DP ranks on chips by their global rank: a multi-host DP group cannot start
    (["--pattern=moe", "--accel=tpu"], "cannot run data-parallel ranks across hosts"),
    (["--pattern=moe", "--accel=tpu", "--stack=kserve"], "cannot run data-parallel ranks across hosts"),
    (["--pattern=baseline", "--accel=tpu", "--topology=4x4"], "spans 4 hosts"),
    (["--pattern=baseline", "--accel=gpu", "--replicas=-1"], "replicas must be a whole number from 1 to 2147483647"),
    (["--pattern=baseline", "--accel=gpu", "--replicas=99999999999"], "replicas must be a whole number from 1 to"),
    (["--pattern=baseline", "--accel=gpu", "--replicas=1e26"], "replicas must be a whole number from 1 to"),
    (["--pattern=baseline", "--accel=gpu", "--model=nope"], "is not a Hugging Face id"),
    (["--pattern=baseline", "--accel=gpu", "--stack=helm"], "unknown stack 'helm'; valid: llmd, kserve"),
])
def test_bad_input_writes_nothing(tmp_path, args, message):
    out = tmp_path / "never"
    proc = invoke("render", *args, f"--out={out}")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, "one line, no traceback"
    assert not out.exists()


def test_refuses_a_foreign_non_empty_directory(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    proc = invoke("render", "--pattern=baseline", "--accel=sim", "--stack=kserve", f"--out={tmp_path}")
    assert proc.returncode == 1 and "is not empty and was not written by `invoke render`" in proc.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_an_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "file").write_text("mine")
    proc = invoke("render", "--pattern=baseline", "--accel=sim", "--stack=kserve", f"--out={tmp_path / 'file'}")
    assert proc.returncode == 1 and proc.stderr == (f"error: --out {tmp_path / 'file'} exists and is not a directory; "
                                                    "valid: a new or empty directory\n")
    from lightrail.errors import LightrailError
    from lightrail.render import check_out

    with pytest.raises(LightrailError, match=r"exists and is not a directory$"):   # what write() itself refuses
        check_out(tmp_path / "file")
    assert (tmp_path / "file").read_text() == "mine"


def test_out_is_required():
    proc = invoke("render", "--pattern=baseline", "--accel=sim")
    assert proc.returncode == 1 and "--out=DIR is required" in proc.stderr


def test_refuses_a_foreign_non_empty_directory_and_names_the_fix(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    proc = invoke("render", "--pattern=baseline", "--accel=sim", "--stack=kserve", f"--out={tmp_path}")
    assert proc.returncode == 1 and proc.stderr.strip().endswith("(choose a new or empty directory)"), proc.stderr


@needs_schemas
def test_a_re_render_removes_only_files_inside_out_whatever_its_list_says(tmp_path):
    """The list of files a render wrote is read back on the next render: a line leading out of OUT
    (`..`, an absolute path) or a comment is never a file to remove, whoever edited the list."""
    out, outside = tmp_path / "out", tmp_path / "outside.txt"
    assert invoke("render", "--pattern=baseline", "--accel=sim", "--stack=kserve", f"--out={out}").returncode == 0
    outside.write_text("not ours")
    (out / "# a comment").write_text("not ours either")
    marker = out / ".lightrail-render"
    marker.write_text(marker.read_text() + f"../outside.txt\n{outside}\n# a comment\n")
    (out / "manifests.yaml").unlink()     # a file the list names, already gone: nothing to remove
    again = invoke("render", "--pattern=baseline", "--accel=sim", "--stack=kserve", f"--out={out}")
    assert again.returncode == 0, again.stderr
    assert outside.read_text() == "not ours" and (out / "# a comment").read_text() == "not ours either"
    # manifests are block YAML a person can read and diff, one key per line
    text = (out / "manifests.yaml").read_text()
    assert text.startswith("apiVersion: ") and "\nkind: " in text and "{" not in text.split("\n", 1)[0]
    assert not re.search(r": (\[.+\]|\{.+\})$", text, re.M), "a list or mapping written inline"


@needs_schemas
def test_a_user_file_in_the_way_is_refused_naming_the_fix(tmp_path):
    out = tmp_path / "out"
    assert invoke("render", "--pattern=baseline", "--accel=sim", "--stack=kserve", f"--out={out}").returncode == 0
    (out / "kustomize" / "caching-qwen2-5-3b-instruct").mkdir()
    (out / "kustomize" / "caching-qwen2-5-3b-instruct" / "kustomization.yaml").write_text("the user's")
    refused = invoke("render", "--pattern=caching", "--accel=sim", "--stack=kserve", f"--out={out}")
    assert refused.returncode == 1 and refused.stderr.strip().endswith(
        "(move them away or choose another directory)"), refused.stderr


def test_rendered_yaml_with_duplicate_keys_is_refused_naming_them():
    from lightrail.errors import LightrailError
    from lightrail.render import load_manifests

    with pytest.raises(LightrailError, match=r"^rendered YAML has duplicate keys a, b near line 3$"):
        load_manifests("kind: x\nspec:\n  a: 1\n  b: 2\n  a: 3\n  b: 4\n")
    assert load_manifests("kind: x\nspec:\n  a: 1\n---\n") == [{"kind": "x", "spec": {"a": 1}}]


@needs_schemas
def test_a_cached_render_is_served_until_an_input_changes(tmp_path, monkeypatch):
    """The cache is read (an entry planted in it is what comes back), and any change to an input
    tree - a file deep in it, one listed after a `__pycache__` - or other schemas is a new render."""
    import json

    from lightrail import render as rendering
    from lightrail.plan import Request, build_plan
    from lightrail.settings import cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LIGHTRAIL_NO_CACHE", raising=False)
    charts = tmp_path / "charts"    # a kserve render reads no chart, but the charts are one of its inputs
    (charts / "__pycache__").mkdir(parents=True)
    (charts / "__pycache__" / "x.pyc").write_text("compiled")
    (charts / "deep" / "er").mkdir(parents=True)
    (charts / "deep" / "er" / "values.yaml").write_text("a: 1\n")
    plan = build_plan(Request(pattern="baseline", accel="sim", stack="kserve"))

    def plant():
        (entry,) = cache_dir("render").glob("*.json")
        data = json.loads(entry.read_text())
        entry.write_text(json.dumps({**data, "notes": ["planted"]}))

    first = rendering.render_validated(plan, charts=charts)
    assert first.notes != ["planted"]
    plant()
    assert rendering.render_validated(plan, charts=charts).notes == ["planted"]      # served from the cache
    (charts / "deep" / "er" / "values.yaml").write_text("a: 22\n")
    again = rendering.render_validated(plan, charts=charts)
    assert again.notes == first.notes and again.objects == first.objects             # rendered again
    for entry in cache_dir("render").glob("*.json"):
        entry.unlink()
    rendering.render_validated(plan, charts=charts)
    plant()
    assert rendering.render_validated(plan, charts=charts, schemas=schemas_dir()).notes == first.notes
    for entry in cache_dir("render").glob("*.json"):
        entry.unlink()
    monkeypatch.setenv("LIGHTRAIL_NO_CACHE", "1")
    rendering.render_validated(plan, charts=charts)
    assert not list(cache_dir("render").glob("*.json")), "LIGHTRAIL_NO_CACHE=1 caches nothing"
