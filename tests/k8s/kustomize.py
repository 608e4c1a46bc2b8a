"""A small kustomize: renders deploy/k8s's overlays where kubectl is not installed.

It knows exactly what those kustomization.yaml files use, and refuses anything else, so a new
feature in an overlay fails loudly here instead of rendering wrong:

- `resources`: YAML files (any number of documents) and directories holding a kustomization.yaml;
- `namespace`: set on every object but the cluster-scoped ones (CLUSTER_SCOPED);
- `images`: `name` replaced by `newName`, `newTag` and `digest` in containers' and init
  containers' `image` (`name:newTag@digest` with both, as kustomize writes them);
- `patches`: `path:` to a strategic-merge patch of one object, found by kind and name.

The strategic merge is the part of Kubernetes' that the overlays use: mappings merge key by key
and a null deletes a key; a list of mappings that all have a `name` merges item by item on it
(containers, env, volumes), the patch's items first and then the original's others, as kustomize
orders them; any other list is replaced whole. Kubernetes merges some lists on other keys
(volumeMounts on mountPath, ports on containerPort) and knows `$patch` directives; the overlays
keep away from those. Where kubectl is installed, tests/k8s/test_manifests.py renders with
`kubectl kustomize` too and requires the same objects (docs/scaling.md).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

KUSTOMIZATION = "kustomization.yaml"
SUPPORTED = frozenset({"apiVersion", "kind", "resources", "namespace", "images", "patches"})
CLUSTER_SCOPED = frozenset({"Namespace"})
POD_SPEC_PATHS = {"Deployment": ("spec", "template", "spec"), "Job": ("spec", "template", "spec")}


class Unsupported(ValueError):
    """A kustomization uses something this renderer does not know."""


def render(directory: Path) -> list[dict]:
    """The objects `kubectl kustomize directory` would print, in resource order."""
    kustomization = yaml.safe_load((directory / KUSTOMIZATION).read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise Unsupported(f"{directory / KUSTOMIZATION}: {', '.join(sorted(unknown))} not supported")
    objects: list[dict] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if path.is_dir():
            objects += render(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path"}:
            raise Unsupported(f"{directory / KUSTOMIZATION}: patch {patch}: only `path:` is supported")
        for document in yaml.safe_load_all((directory / patch["path"]).read_text()):
            target = _find(objects, document, directory / patch["path"])
            objects[objects.index(target)] = merge(target, document)
    if "namespace" in kustomization:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj.setdefault("metadata", {})["namespace"] = kustomization["namespace"]
    for image in kustomization.get("images", []):
        if set(image) - {"name", "newName", "newTag", "digest"}:
            raise Unsupported(f"{directory / KUSTOMIZATION}: image {image}: unknown fields")
        for obj in objects:
            for container in _containers(obj):
                if _image_name(container.get("image", "")) == image["name"]:
                    container["image"] = _pinned(container["image"], image)
    return objects


def merge(original: Any, patch: Any) -> Any:
    """Strategic merge, as far as the module docstring says."""
    if isinstance(original, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(original)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = merge(merged[key], value)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if _named(original) and _named(patch):
        by_name = {item["name"]: item for item in original}
        patched = [merge(by_name[item["name"]], item) if item["name"] in by_name else copy.deepcopy(item)
                   for item in patch]
        names = {item["name"] for item in patch}
        return patched + [copy.deepcopy(item) for item in original if item["name"] not in names]
    return copy.deepcopy(patch)


def _named(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(i, dict) and "name" in i for i in value)


def _find(objects: list[dict], patch: dict, source: Path) -> dict:
    matches = [obj for obj in objects
               if obj["kind"] == patch["kind"] and obj["metadata"]["name"] == patch["metadata"]["name"]]
    if len(matches) != 1:
        raise Unsupported(f"{source}: {patch['kind']}/{patch['metadata']['name']} matches {len(matches)} objects")
    return matches[0]


def _containers(obj: dict) -> list[dict]:
    if obj["kind"] not in POD_SPEC_PATHS:
        return []
    spec = obj
    for key in POD_SPEC_PATHS[obj["kind"]]:
        spec = spec.get(key, {})
    return spec.get("containers", []) + spec.get("initContainers", [])


def _image_name(image: str) -> str:
    """The image without its tag or digest (a registry's port is not a tag)."""
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return name


def _pinned(image: str, entry: dict) -> str:
    """kustomize's rule: newTag and digest give name:tag@digest, a digest alone drops the tag,
    and with neither the image keeps its own tag and digest."""
    name = entry.get("newName", _image_name(image))
    if "digest" in entry:
        tag = f":{entry['newTag']}" if "newTag" in entry else ""
        return f"{name}{tag}@{entry['digest']}"
    if "newTag" in entry:
        return f"{name}:{entry['newTag']}"
    return name + image[len(_image_name(image)):]
