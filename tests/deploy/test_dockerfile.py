"""deploy/Dockerfile, checked without building it (no container runtime or base image here; deploy/README.md).

What can fail here: the entry point is not a valid ``labservice`` command line, the image runs as root, a
COPY names a file that is not in the repository, a package folder is left out, the health check or the
port disagree with the command, or the commands differ from the ones the cluster test runs.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.plugin.deploy import labservice_context

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for ins in instructions(path):
        if ins[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(ins)
    return found


def exec_form(stage: list[tuple[str, str]], word: str) -> list[str]:
    values = [json.loads(arg) for w, arg in stage if w == word]
    assert values, f"the last stage has no {word} in exec (JSON) form"
    assert all(isinstance(v, list) for v in values), f"{word} must be in exec form (a JSON list)"
    return values[-1]


def test_multi_stage_and_not_root() -> None:
    all_stages = stages(DOCKERFILE)
    assert len(all_stages) >= 2, "the Dockerfile must build in one stage and run in another"
    run = all_stages[-1]
    assert " AS " in run[0][1].upper() and "--from=build" in " ".join(a for w, a in run if w == "COPY")
    users = [a for w, a in run if w == "USER"]
    assert users, "the run stage has no USER: the service would run as root"
    uid = users[-1].split(":")[0]
    assert uid not in {"root", "0"}, f"USER {users[-1]} is root"
    assert any("useradd" in a and uid in a for w, a in run if w == "RUN"), f"user {uid} is not created"
    build = all_stages[0]
    assert not any("apt-get" in a and "build-essential" in a for w, a in run if w == "RUN"), "compilers in the image"
    assert any("pip install" in a for w, a in build if w == "RUN")


def test_every_copied_path_exists_and_every_package_folder_is_copied() -> None:
    copied: set[str] = set()
    for word, arg in instructions(DOCKERFILE):
        if word != "COPY" or arg.startswith("--from"):
            continue
        *sources, _dest = arg.split()
        for src in sources:
            assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
            copied.add(src.rstrip("/"))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    assert folders <= copied, f"package folders not copied into the image: {sorted(folders - copied)}"
    assert pyproject["project"]["readme"] in copied  # pip install . needs it


def test_the_entry_point_is_a_valid_labservice_command_with_the_baked_config() -> None:
    run = stages(DOCKERFILE)[-1]
    argv = exec_form(run, "ENTRYPOINT") + exec_form(run, "CMD")
    assert argv[:2] == ["labservice", "serve"], argv
    ctx = labservice_context(argv[1:])  # raises on an unknown option or a bad value
    assert ctx.params["host"] == "0.0.0.0", "inside a container the server must listen on every interface"
    baked = {dest: src for w, a in run if w == "COPY" and not a.startswith("--from") for src, dest in [a.split()]}
    config = str(ctx.params["config"])
    assert baked.get(config) == "deploy/labservice.yaml", f"--config {config} is not the file the image holds"
    env = " ".join(a for w, a in run if w == "ENV")
    assert f"LABSERVICE_CONFIG={config}" in env, "engine/dask commands in the image must find the same file"
    assert [a for w, a in run if w == "EXPOSE"] == [str(ctx.params["port"])]
    health = next(a for w, a in run if w == "HEALTHCHECK")
    assert f"127.0.0.1:{ctx.params['port']}/livez" in health
    done = subprocess.run([sys.executable, "-m", "labservice", *argv[1:2], "--help"], capture_output=True, text=True,
                          timeout=60, env={k: v for k, v in os.environ.items() if not k.startswith("LABSERVICE_")})
    assert done.returncode == 0 and "--config" in done.stdout, done.stderr


def cluster_commands() -> set[tuple[str, str]]:
    """(program, subcommand) of every command line the cluster test builds (tests/cluster/*.py)."""
    found: set[tuple[str, str]] = set()
    for path in (ROOT / "tests" / "cluster").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.List) and len(node.elts) >= 2:
                head = ast.unparse(node.elts[0])
                sub = node.elts[1]
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    for program in ("labservice", "dask"):
                        if f'"{program}"' in head or f"'{program}'" in head:
                            found.add((program, sub.value))
    return found


def test_the_image_runs_the_commands_the_cluster_test_runs() -> None:
    from tests.plugin.deploy import render

    ran = cluster_commands()
    if not ran:
        pytest.skip("tests/cluster builds no command lines yet")
    image: set[tuple[str, str]] = set()
    run = stages(DOCKERFILE)[-1]
    image.add(("labservice", exec_form(run, "CMD")[0]))
    for obj in render(ROOT / "deploy" / "k8s" / "overlays" / "example"):
        spec = obj.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []):
            argv = c.get("command") or ["labservice", *c.get("args", [])]
            image.add((Path(argv[0]).name, argv[1]))
    image.discard(("labservice", "db"))  # the one-off migration Job; the cluster test migrates in-process
    assert image <= ran, f"deployed but never run by tests/cluster: {sorted(image - ran)}"
