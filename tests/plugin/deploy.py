"""Helpers for tests/deploy: the part of kustomize deploy/k8s uses, and parsing a container's command line.

No kustomize binary can be installed here, so :func:`render` implements the subset the manifests use:
``resources`` (files and folders), ``configMapGenerator`` and ``secretGenerator`` (files and literals, a
content-hash suffix, references rewritten), ``namespace``, ``images`` and ``labels``. Any other key in a
kustomization is an error, so a manifest can never use a feature this renderer would silently skip.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "configMapGenerator", "secretGenerator", "namespace", "images",
             "labels", "generatorOptions"}  # fmt: skip
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                  "CustomResourceDefinition", "IngressClass"}  # fmt: skip


def render(folder: Path) -> list[dict[str, Any]]:
    """The objects ``kustomize build folder`` gives, for the subset of kustomize above."""
    kust = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kust) - SUPPORTED
    if unknown:
        raise ValueError(f"{folder}/kustomization.yaml uses {sorted(unknown)}, which tests/plugin/deploy.py does not "
                         "render: extend render() or use only " + ", ".join(sorted(SUPPORTED)))
    objects: list[dict[str, Any]] = []
    for res in kust.get("resources", []):
        path = (folder / res).resolve()
        objects += render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    renames: dict[tuple[str, str], str] = {}
    hashed = not (kust.get("generatorOptions") or {}).get("disableNameSuffixHash", False)
    for kind, key in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for gen in kust.get(key, []):
            obj = _generate(folder, kind, gen, hashed)
            renames[(kind, gen["name"])] = obj["metadata"]["name"]
            objects.append(obj)
    for obj in objects:
        _rewrite_refs(obj, renames)
        if kust.get("namespace") and obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = kust["namespace"]
        for group in kust.get("labels", []):
            obj["metadata"].setdefault("labels", {}).update(group.get("pairs", {}))
        for container in containers(obj):
            container["image"] = _image(container["image"], kust.get("images", []))
    return objects


def _generate(folder: Path, kind: str, gen: dict[str, Any], hashed: bool) -> dict[str, Any]:
    data: dict[str, str] = {}
    for item in gen.get("files", []):
        key, _, rel = item.partition("=") if "=" in item else (Path(item).name, "", item)
        data[key] = (folder / rel).read_text()
    for item in gen.get("literals", []):
        key, _, value = item.partition("=")
        data[key] = value
    digest = hashlib.sha256(json.dumps([kind, data], sort_keys=True).encode()).hexdigest()[:10]
    name = f"{gen['name']}-{digest}" if hashed else gen["name"]
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}
    if kind == "Secret":
        obj["type"] = gen.get("type", "Opaque")
        obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        obj["data"] = data
    return obj


def _image(image: str, rules: list[dict[str, str]]) -> str:
    name, tag = (image.rsplit(":", 1) + [""])[:2] if ":" in image.rsplit("/", 1)[-1] else (image, "")
    for rule in rules:
        if rule["name"] == name:
            name = rule.get("newName", name)
            tag = rule.get("newTag", tag)
    return f"{name}:{tag}" if tag else name


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec", {})
    if obj["kind"] == "Pod":
        return spec
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
    return template.get("spec") if template else None


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(obj)
    return [] if spec is None else spec.get("containers", []) + spec.get("initContainers", [])


def _rewrite_refs(obj: dict[str, Any], renames: dict[tuple[str, str], str]) -> None:
    """Point ConfigMap and Secret references at the generated (hash-suffixed) names."""
    spec = pod_spec(obj)
    if spec is None:
        return

    def fix(ref: dict[str, Any] | None, kind: str, field: str = "name") -> None:
        if ref and (kind, ref.get(field)) in renames:
            ref[field] = renames[(kind, ref[field])]

    for vol in spec.get("volumes", []):
        fix(vol.get("configMap"), "ConfigMap")
        fix(vol.get("secret"), "Secret", "secretName")
    for c in containers(obj):
        for env in c.get("env", []):
            fix(env.get("valueFrom", {}).get("configMapKeyRef"), "ConfigMap")
            fix(env.get("valueFrom", {}).get("secretKeyRef"), "Secret")
        for src in c.get("envFrom", []):
            fix(src.get("configMapRef"), "ConfigMap")
            fix(src.get("secretRef"), "Secret")


# -- command lines -------------------------------------------------------------------------------------


def labservice_context(args: list[str]) -> Any:
    """Parse ``labservice <args>`` the way the CLI would (options, types, choices) without running it; a
    wrong option or value raises click's UsageError/BadParameter. Returns the innermost click context."""
    import typer.main

    from labservice.cli import app

    command: Any = typer.main.get_command(app)
    ctx = command.make_context("labservice", list(args), resilient_parsing=False)
    while hasattr(command, "commands"):  # descend into groups (token create, db upgrade, ...)
        pending = [*getattr(ctx, "_protected_args", ()), *ctx.args]  # click/typer versions differ here
        name, sub, rest = command.resolve_command(ctx, pending)
        command = sub
        ctx = sub.make_context(name, rest, parent=ctx)
    return ctx


def dask_context(args: list[str]) -> Any:
    """Parse ``dask scheduler|worker <args>`` with distributed's own click commands."""
    from distributed.cli import dask_scheduler, dask_worker

    sub = {"scheduler": dask_scheduler.main, "worker": dask_worker.main}[args[0]]
    return sub.make_context(f"dask {args[0]}", list(args[1:]))


def shell_words(text: str) -> list[str]:
    return shlex.split(text)
