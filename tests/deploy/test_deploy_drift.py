"""No drift between the deploy files and the code: every image, port, environment variable, mounted path,
probe and cross-reference that docker/compose.yaml, docker/kubernetes/ and docker/Dockerfile name exists in
what reads it. The programs are the real ones: each container's command line (the image's ENTRYPOINT plus
the file's command/args) and environment go through svd-triton's own CLI, `serve --dry-run` for Triton
and `gateway` with uvicorn stopped at the door, and what they would listen on and read is compared with
what the files declare. A failure names the file, the container and the drifted item."""
import ast
import contextlib
import importlib.util
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.requirements import Requirement

from tests.support import ROOT
from tests.support.deploy_files import (ADAPTER_VALUES, KUBERNETES, Stage, compose_model, dockerfile_stages, image_requirements,
                          kubernetes_objects, pod_containers)

SOURCE = ROOT / "src"
GATEWAY_CODE = [SOURCE / "svd_contract", SOURCE / "svd_triton", SOURCE / "svd_gateway"]
TRITON_CODE = [SOURCE / "svd_contract", SOURCE / "svd_triton", SOURCE / "svd_engine", SOURCE / "svd_triton_backend",
               ROOT / "model_repository"]
# Whose code runs in each image: the gateway image runs the client and gateway packages; Triton's runs the
# launcher and, in the Python backend, the models, their adapters and the engine.
STAGE_CODE = {"gateway": GATEWAY_CODE, "triton": TRITON_CODE}

# Variables that libraries read, not this project's code, each with the requirement of the image that
# brings the library and the library file that reads it (checked below): the one place they are named.
LIBRARY_ENV = {
    "HF_TOKEN": ("diffusers", "huggingface_hub/utils/_auth.py"),
    "HF_HOME": ("diffusers", "huggingface_hub/constants.py"),
    "TORCHINDUCTOR_CACHE_DIR": ("torch", "torch/_inductor/runtime/cache_dir_utils.py"),
    "AWS_ENDPOINT_URL": ("boto3", "botocore/configprovider.py"),
    "AWS_DEFAULT_REGION": ("boto3", "botocore/configprovider.py"),
    "AWS_ACCESS_KEY_ID": ("boto3", "botocore/credentials.py"),
    "AWS_SECRET_ACCESS_KEY": ("boto3", "botocore/credentials.py"),
}


@dataclass(frozen=True)
class PublicImage:
    env: frozenset[str]
    paths: frozenset[str]
    ports: frozenset[int]


# Public images the deploy files run as they are, with what their documentation says they read: the one
# place they are named. PostgreSQL: Docker's official image (its Docker Hub page: the POSTGRES_* variables
# its entrypoint reads, PGDATA's default, port 5432).
PUBLIC_IMAGES = {
    "postgres:17-bookworm": PublicImage(env=frozenset({"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}),
                                        paths=frozenset({"/var/lib/postgresql/data"}), ports=frozenset({5432})),
}

# What the compose file is resolved with: the required token, and the documented way to serve a mounted
# weights folder (docs/deployment.md: SVD_MODEL_SOURCE=/models/weights), so the weights mount is named by a variable.
COMPOSE_ENV = {"SVD_TRITON_TOKEN": "test-token", "SVD_MODEL_SOURCE": "/models/weights"}


@dataclass
class Container:
    where: str                 # "compose.yaml service gateway", "StatefulSet/svd-gateway container gateway"
    image: str
    args: list[str]            # appended to the image's ENTRYPOINT
    env: dict[str, str]
    ports: set[int]            # declared (container side)
    mounts: set[str]
    probes: list[tuple[int | str, str | None]] = field(default_factory=list)  # (port, HTTP path or None for TCP)
    named_ports: dict[str, int] = field(default_factory=dict)


@dataclass
class Program:
    """What a container's command line, run through the real CLI, listens on and reads."""
    ports: set[int]
    paths: set[str]
    routes: set[str]           # HTTP paths it serves
    grpc_port: int | None = None
    metrics_port: int | None = None
    settings: object = None    # the gateway's Settings


# The code's side

def env_read_by(folders: list[Path]) -> set[str]:
    """Names passed to os.environ.get / os.getenv / os.environ[...] in the code, literally or through a
    module-level string constant (TOKEN_ENV = "SVD_TRITON_TOKEN"), and those a model names in its class
    attribute ENVIRONMENT (svd_triton_backend.skeleton reads them with os.environ.get)."""
    names = set()
    for path in (p for folder in folders for p in folder.rglob("*.py")):
        tree = ast.parse(path.read_text())
        constants = {target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
                     and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                     for target in node.targets if isinstance(target, ast.Name)}
        for node in ast.walk(tree):
            key = None
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.environ.get", "os.getenv") and node.args:
                key = node.args[0]
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ":
                key = node.slice
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                names.add(key.value)
            elif isinstance(key, ast.Name) and key.id in constants:
                names.add(constants[key.id])
            if isinstance(node, ast.ClassDef):
                names |= {item.value for statement in node.body if isinstance(statement, ast.Assign)
                          and [ast.unparse(t) for t in statement.targets] == ["ENVIRONMENT"]
                          for item in ast.walk(statement.value)
                          if isinstance(item, ast.Constant) and isinstance(item.value, str)}
    return names


def library_file(relative: str) -> Path:
    top = importlib.util.find_spec(relative.split("/")[0])  # located, not imported
    return Path(top.submodule_search_locations[0]).parent / relative


def pip_reads(name: str) -> bool:
    """pip reads PIP_<OPTION> for each of its options (PIP_NO_CACHE_DIR → --no-cache-dir)."""
    from pip._internal.commands import create_command

    option = "--" + name.removeprefix("PIP_").lower().replace("_", "-")
    return create_command("install").parser.get_option(option) is not None


def env_problems(container: Container, stage: Stage) -> list[str]:
    code = env_read_by(STAGE_CODE[stage.name])
    installed = {Requirement(r).name.lower() for r in image_requirements(stage)}
    problems = []
    for name in sorted({**stage.env, **container.env}):
        if name in code or (name.startswith("PIP_") and pip_reads(name)):
            continue
        if name not in LIBRARY_ENV:
            problems.append(f"{container.where}: environment variable {name} is read by no code in the "
                            f"{stage.name} image")
        elif LIBRARY_ENV[name][0] not in installed:
            problems.append(f"{container.where}: {name} is read by {LIBRARY_ENV[name][1]}, which the {stage.name} "
                            f"image does not install")
    return problems


def run_cli(argv: list[str]) -> str:
    """svd-triton's main() on a container's command line: what it prints, or a failure quoting its error."""
    from svd_triton.cli import main

    printed, errors = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
            code = main(argv)
    except SystemExit as exit:  # argparse: an option the CLI does not have
        code = exit.code
    assert code == 0, f"`svd-triton {' '.join(argv)}` fails: {errors.getvalue().strip()}"
    return printed.getvalue()


def run_serve(argv: list[str], env: dict[str, str], monkeypatch) -> Program:
    """`svd-triton serve ... --dry-run`: the tritonserver command the launcher would start."""
    from svd_triton.launcher import SHM_FOLDER

    _set_environment(env, monkeypatch)
    flags = dict(re.findall(r"--(\w[\w-]*)=(\S+)", run_cli(argv + ["--dry-run"])))
    ports = {int(flags["http-port"]), int(flags["grpc-port"]), int(flags["metrics-port"])}
    paths = {str(SHM_FOLDER), env.get("HF_HOME", ""), env.get("SVD_MODEL_SOURCE", "")}
    routes = {"/" + uri for uri in re.findall(r'request_uri = "(v2/health/\w+)"', library_file(
        "tritonclient/http/_client.py").read_text())}  # KServe v2 health, as Triton's own client calls it
    return Program(ports=ports, paths=paths, routes=routes, grpc_port=int(flags["grpc-port"]),
                   metrics_port=int(flags["metrics-port"]))


def run_gateway(argv: list[str], env: dict[str, str], monkeypatch) -> Program:
    """`svd-triton gateway ...` up to uvicorn.run: the Settings it builds and where it would listen."""
    import svd_gateway

    _set_environment(env, monkeypatch)
    built, served = {}, {}
    real_create_app = svd_gateway.create_app
    monkeypatch.setattr(svd_gateway, "create_app",
                        lambda settings: built.setdefault("app", real_create_app(built.setdefault("settings", settings))))
    monkeypatch.setattr("uvicorn.run", lambda app, **options: served.update(options))
    run_cli(argv)
    settings = built["settings"]
    assert served["host"] == "0.0.0.0", f"the gateway listens on {served['host']}, unreachable from outside its container"
    return Program(ports={served["port"]}, paths={str(settings.data_dir)},
                   routes=set(built["app"].openapi()["paths"]), settings=settings)


PROGRAMS = {"serve": run_serve, "gateway": run_gateway}


def _set_environment(env: dict[str, str], monkeypatch) -> None:
    """Exactly the container's variables, as far as the code reads any: none leak in from this shell."""
    for name in env_read_by(sorted(set(GATEWAY_CODE + TRITON_CODE))):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


# The files' side

def http_checks(command: list[str]) -> list[tuple[int, str]]:
    """(port, path) of each http://localhost URL a healthcheck command fetches."""
    return [(int(port), path) for port, path in re.findall(r"http://localhost:(\d+)(/[\w/]*)", " ".join(command))]


def compose_containers() -> list[Container]:
    services = compose_model("postgres", env=COMPOSE_ENV)["services"]
    containers = []
    for name, service in services.items():
        probes = http_checks((service.get("healthcheck") or {}).get("test") or [])
        containers.append(Container(
            where=f"compose.yaml service {name}", image=service["image"], args=service.get("command") or [],
            env={k: v or "" for k, v in (service.get("environment") or {}).items()},
            ports={int(port["target"]) for port in service.get("ports", [])},
            mounts={volume["target"] for volume in service.get("volumes", [])}, probes=probes))
    return containers


def secret_values(objects: dict) -> dict[str, dict[str, str]]:
    return {o["metadata"]["name"]: o.get("stringData", {}) for o in objects.values() if o["kind"] == "Secret"}


def kubernetes_containers(objects: dict) -> list[Container]:
    secrets = secret_values(objects)
    containers = []
    for key, workload in objects.items():
        if workload["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for spec in pod_containers(workload):
            env = {}
            for source in spec.get("envFrom", []):
                env.update(secrets.get(source["secretRef"]["name"], {}))
            for variable in spec.get("env", []):
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                env[variable["name"]] = (secrets.get(reference["name"], {}).get(reference["key"], "")
                                         if reference else variable.get("value", ""))
            named = {port["name"]: port["containerPort"] for port in spec.get("ports", [])}
            probes = []
            for probe in (spec.get(kind) for kind in ("startupProbe", "readinessProbe", "livenessProbe")):
                if probe and "httpGet" in probe:
                    probes.append((probe["httpGet"]["port"], probe["httpGet"]["path"]))
                elif probe and "tcpSocket" in probe:
                    probes.append((probe["tcpSocket"]["port"], None))
            containers.append(Container(
                where=f"{key} container {spec['name']}", image=spec["image"], args=spec.get("args", []), env=env,
                ports=set(named.values()), mounts={m["mountPath"] for m in spec.get("volumeMounts", [])},
                probes=probes, named_ports=named))
    return containers


def built_images() -> dict[str, Stage]:
    """Each image name the compose file builds, with the Dockerfile stage it is built from."""
    stages = dockerfile_stages()
    services = compose_model("postgres", env=COMPOSE_ENV)["services"]
    built = {}
    for name, service in services.items():
        if "build" in service:
            target = service["build"].get("target")
            assert target in stages, f"compose.yaml service {name}: build target {target!r} is no stage of docker/Dockerfile"
            assert (Path(service["build"]["context"]) / service["build"]["dockerfile"]).resolve() == (
                ROOT / "docker/Dockerfile").resolve(), f"compose.yaml service {name} builds another Dockerfile"
            built[service["image"]] = stages[target]
    return built


def check_container(container: Container, built: dict[str, Stage], monkeypatch) -> tuple[list[str], Program | None]:
    if container.image in PUBLIC_IMAGES:
        image = PUBLIC_IMAGES[container.image]
        problems = [f"{container.where}: environment variable {name} is not one {container.image} reads"
                    for name in sorted(set(container.env) - image.env)]
        problems += [f"{container.where}: mount {path} is not a path {container.image} uses"
                     for path in sorted(container.mounts - image.paths)]
        problems += [f"{container.where}: port {port} is not one {container.image} listens on"
                     for port in sorted(container.ports - image.ports)]
        return problems, None
    if container.image not in built:
        return [f"{container.where}: image {container.image} is neither built by compose.yaml from a docker/Dockerfile "
                f"stage nor a public image named in PUBLIC_IMAGES"], None
    stage = built[container.image]
    argv = stage.entrypoint[1:] + list(container.args)
    program = PROGRAMS[argv[0]](argv, {**stage.env, **container.env}, monkeypatch)
    problems = env_problems(container, stage)
    problems += [f"{container.where}: port {port} is not one `{' '.join(stage.entrypoint)}` listens on "
                 f"({sorted(program.ports)})" for port in sorted(container.ports - program.ports)]
    problems += [f"docker/Dockerfile stage {stage.name}: EXPOSE {port} is not a port its program listens on"
                 for port in sorted(set(stage.expose) - program.ports)]
    problems += [f"docker/Dockerfile stage {stage.name}: its program listens on {port}, which it does not EXPOSE"
                 for port in sorted(program.ports - set(stage.expose))]
    problems += [f"{container.where}: mount {path} is no path the {stage.name} image's program reads "
                 f"({sorted(p for p in program.paths if p)})" for path in sorted(container.mounts - program.paths)]
    for port, path in container.probes + http_checks(stage.healthcheck):
        number = container.named_ports.get(port, port)
        if number not in program.ports:
            problems.append(f"{container.where}: probe port {port} is not one its program listens on")
        if path is not None and path not in program.routes:
            problems.append(f"{container.where}: probe path {path} is not served by its program")
    return problems, program


# The tests

@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    return kubernetes_objects()


def test_library_environment_variables_are_read_by_those_libraries():
    for name, (_, relative) in LIBRARY_ENV.items():
        source = library_file(relative).read_text()
        assert f'"{name}"' in source or f"'{name}'" in source, f"{relative} no longer reads {name}"


def test_compose_containers_match_the_code(monkeypatch):
    built = built_images()
    problems, programs = [], {}
    for container in compose_containers():
        found, program = check_container(container, built, monkeypatch)
        problems += found
        programs[container.where.rsplit(" ", 1)[1]] = program
    assert not problems, "\n".join(problems)
    settings = programs["gateway"].settings
    for url, what in ((settings.triton_url, "grpc_port"), (settings.metrics, "metrics_port")):
        host, port = _host_port(url)
        target = programs.get(host)
        if target is None or getattr(target, what) != port:
            problems.append(f"compose.yaml service gateway: {url} is not the {what.replace('_', ' ')} of a compose service")
    assert not problems, "\n".join(problems)
    assert settings.token == COMPOSE_ENV["SVD_TRITON_TOKEN"], "the gateway does not get the shared token"
    assert settings.database_url == "", "the default compose stack is not on SQLite"


def test_kubernetes_containers_match_the_code(objects, monkeypatch):
    built = built_images()
    problems, programs = [], {}
    for container in kubernetes_containers(objects):
        found, program = check_container(container, built, monkeypatch)
        problems += found
        programs[container.where.split(" ")[0]] = (container, program)
    assert not problems, "\n".join(problems)
    _, gateway = programs["StatefulSet/svd-gateway"]
    services = {o["metadata"]["name"]: o for o in objects.values() if o["kind"] == "Service"}
    for url, what in ((gateway.settings.triton_url, "grpc_port"), (gateway.settings.metrics, "metrics_port")):
        host, port = _host_port(url)
        service = services.get(host)
        targets = [p["targetPort"] for p in (service or {"spec": {"ports": []}})["spec"]["ports"] if p["port"] == port]
        backends = [(c, p) for c, p in programs.values() if p and service and _selects(service, objects, c)]
        if not targets or not any(getattr(p, what) == c.named_ports.get(targets[0], targets[0]) for c, p in backends):
            problems.append(f"StatefulSet/svd-gateway: {url} is not a Service port reaching Triton's {what.replace('_', ' ')}")
    assert not problems, "\n".join(problems)
    secret = secret_values(objects)["svd-gateway"]
    assert gateway.settings.database_url == secret["database-url"], "the job database URL does not reach the gateway"
    assert gateway.settings.webhook_secret == secret["webhook-secret"], "the webhook key does not reach the gateway"


def test_kubernetes_references_resolve(objects):
    """Secrets, claims, selectors, named ports, scale targets and metric names refer to things that exist."""
    secrets = secret_values(objects)
    adapter = yaml.safe_load((KUBERNETES / ADAPTER_VALUES).read_text())
    metrics = {rule["name"]["as"] for rule in adapter["rules"]["custom"]}
    problems = []
    for key, o in objects.items():
        if o["kind"] in ("Deployment", "StatefulSet"):
            pod = o["spec"]["template"]["spec"]
            claims = [v["persistentVolumeClaim"]["claimName"] for v in pod.get("volumes", []) if "persistentVolumeClaim" in v]
            problems += [f"{key}: PersistentVolumeClaim {c} is not in docker/kubernetes/" for c in claims
                         if f"PersistentVolumeClaim/{c}" not in objects]
            for container in pod_containers(o):
                for variable in container.get("env", []):
                    ref = variable.get("valueFrom", {}).get("secretKeyRef")
                    if ref and not ref.get("optional") and ref["key"] not in secrets.get(ref["name"], {}):
                        problems.append(f"{key}: {variable['name']} reads key {ref['key']} of Secret {ref['name']}, "
                                        f"which no example Secret has")
                problems += [f"{key}: envFrom Secret {s['secretRef']['name']} has no example" for s in
                             container.get("envFrom", []) if s["secretRef"]["name"] not in secrets]
        elif o["kind"] == "Service":
            pods = [w for w in objects.values() if w["kind"] in ("Deployment", "StatefulSet") and _selects(o, objects, w)]
            named = {p.get("name") for w in pods for c in pod_containers(w) for p in c.get("ports", [])}
            if not pods:
                problems.append(f"{key}: selects no workload")
            problems += [f"{key}: targetPort {p['targetPort']} is no container port of the pods it selects"
                         for p in o["spec"]["ports"] if p["targetPort"] not in named]
        elif o["kind"] == "Ingress":
            for rule in o["spec"]["rules"]:
                for path in rule["http"]["paths"]:
                    backend = path["backend"]["service"]
                    service = objects.get(f"Service/{backend['name']}")
                    if not service or backend["port"]["name"] not in {p["name"] for p in service["spec"]["ports"]}:
                        problems.append(f"{key}: backend {backend} is no Service port")
        elif o["kind"] == "HorizontalPodAutoscaler":
            target = o["spec"]["scaleTargetRef"]
            if f"{target['kind']}/{target['name']}" not in objects:
                problems.append(f"{key}: scales {target['kind']}/{target['name']}, which is not in docker/kubernetes/")
            for metric in o["spec"]["metrics"]:
                source = metric.get("pods") or metric.get("object")
                if source["metric"]["name"] not in metrics:
                    problems.append(f"{key}: metric {source['metric']['name']} is exposed by no rule in {ADAPTER_VALUES}")
                described = source.get("describedObject")
                if described and f"{described['kind']}/{described['name']}" not in objects:
                    problems.append(f"{key}: {described['kind']}/{described['name']} is not in docker/kubernetes/")
    assert not problems, "\n".join(problems)


def test_the_ingress_fits_the_gateway_settings(objects, monkeypatch):
    """The proxy passes what the gateway accepts: its body limit, its longest `Prefer: wait`, its public URL."""
    from svd_gateway import Settings

    ingress = objects["Ingress/svd-gateway"]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == f"{Settings.max_body_bytes // 2**20}m"
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) > Settings.max_wait
    gateway = next(c for c in kubernetes_containers(objects) if c.where.startswith("StatefulSet/svd-gateway"))
    public_url = gateway.args[gateway.args.index("--public-url") + 1]
    assert urlsplit(public_url).hostname == ingress["spec"]["rules"][0]["host"]


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"grpc://{url}")
    return parts.hostname, parts.port


def _selects(service: dict, objects: dict, workload) -> bool:
    """Whether a Service selects a workload (an object, or a Container found in one)."""
    if isinstance(workload, Container):
        workload = objects[workload.where.split(" ")[0]]
    labels = workload["spec"]["template"]["metadata"]["labels"]
    return all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
