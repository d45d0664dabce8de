"""packaging/kubernetes at schema level (no cluster here): kinds and
required fields, the DaemonSet's Bidirectional mount (which Kubernetes
allows only in a privileged container), its readiness probe on the mount,
IRSA on its ServiceAccount, and the inference pod's read-only
HostToContainer hostPath onto the same host directory."""

import os
import re

import pytest

import wfs_testlib as lib

yaml = pytest.importorskip("yaml", reason="python3-yaml not installed")

K8S = os.path.join(lib.REPO, "packaging", "kubernetes")
REQUIRED = {"ServiceAccount": ["metadata"], "DaemonSet": ["metadata", "spec"],
            "Pod": ["metadata", "spec"]}
API = {"ServiceAccount": "v1", "DaemonSet": "apps/v1", "Pod": "v1"}
PROPAGATION = {"None", "HostToContainer", "Bidirectional"}


def docs(name):
    with open(os.path.join(K8S, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def check_object(d):
    kind = d.get("kind")
    assert kind in REQUIRED, "unknown kind %r" % kind
    assert d.get("apiVersion") == API[kind], (kind, d.get("apiVersion"))
    for k in REQUIRED[kind]:
        assert k in d, "%s without %s" % (kind, k)
    name = d["metadata"].get("name")
    assert name and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)


def check_pod_spec(spec):
    assert spec.get("containers"), "no containers"
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for c in spec["containers"]:
        assert c.get("name") and c.get("image"), c
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, "mount of undeclared volume %s" % m
            assert m["mountPath"].startswith("/")
            prop = m.get("mountPropagation", "None")
            assert prop in PROPAGATION, prop
            if prop == "Bidirectional":
                assert c.get("securityContext", {}).get("privileged"), \
                    "Bidirectional needs a privileged container"
    for v in volumes.values():
        if "hostPath" in v:
            assert v["hostPath"]["path"].startswith("/")
    return volumes


def test_daemonset():
    check_daemonset()


def check_daemonset():
    """Checks daemonset.yaml; returns (host directory, mount target)."""
    objs = docs("daemonset.yaml")
    for d in objs:
        check_object(d)
    ds = [d for d in objs if d["kind"] == "DaemonSet"][0]
    sa = [d for d in objs if d["kind"] == "ServiceAccount"][0]
    spec = ds["spec"]
    labels = spec["template"]["metadata"]["labels"]
    for k, v in spec["selector"]["matchLabels"].items():
        assert labels.get(k) == v, "selector does not match the template"
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert sa["metadata"]["namespace"] == ds["metadata"]["namespace"]
    assert re.match(r"arn:aws:iam::\d{12}:role/",
                    sa["metadata"]["annotations"]
                    ["eks.amazonaws.com/role-arn"])
    volumes = check_pod_spec(pod)
    c = pod["containers"][0]
    bidi = [m for m in c["volumeMounts"]
            if m.get("mountPropagation") == "Bidirectional"]
    assert len(bidi) == 1
    host = volumes[bidi[0]["name"]]["hostPath"]["path"]
    cmd = " ".join(c.get("command", []) + c.get("args", []))
    target = re.search(r"weightfs -f .* (\S+)$", cmd.strip()).group(1)
    assert target.startswith(bidi[0]["mountPath"] + "/"), target
    assert "allow_other" in cmd  # other pods' users read it
    assert "AWS_SECRET" not in cmd and "aws_secret" not in cmd
    assert "fusermount3 -u -z " + target in cmd  # a stale mount is cleared
    probe = c["readinessProbe"]["exec"]["command"]
    assert probe == ["weightfs-ctl", "stats", target]
    assert "/dev/fuse" in [v["hostPath"]["path"] for v in volumes.values()
                           if "hostPath" in v]
    sc = c["securityContext"]
    assert sc.get("readOnlyRootFilesystem") is True
    assert not pod.get("hostNetwork") and not pod.get("hostPID")
    assert "memory" in c["resources"]["limits"]
    return host, target


def test_inference_pod():
    host, target = check_daemonset()
    objs = docs("inference-pod.yaml")
    pod = objs[0]
    check_object(pod)
    assert pod["kind"] == "Pod"
    volumes = check_pod_spec(pod["spec"])
    c = pod["spec"]["containers"][0]
    m = c["volumeMounts"][0]
    assert m["mountPropagation"] == "HostToContainer"
    assert m["readOnly"] is True
    assert volumes[m["name"]]["hostPath"]["path"] == host
    assert not c.get("securityContext", {}).get("privileged")
    # The model path the server gets is the weightfs mount, seen inside.
    rel = os.path.relpath(target, host)
    assert m["mountPath"] + "/" + rel in " ".join(c.get("args", []))


def test_dockerfile():
    text = open(os.path.join(K8S, "Dockerfile")).read()
    assert re.search(r"^FROM debian:(12|bookworm)", text, re.M)
    assert "weightfs_*.deb" in text and "libweightfs0_*.deb" in text
    assert "apt-get install" in text


RACK = os.path.join(lib.REPO, "packaging", "rack-cache")


def test_rack_cache_example():
    """packaging/rack-cache/kubernetes.yaml: the ConfigMap is the tested
    template, the Deployment sets every variable it uses, the Service
    selects the Deployment's pods, the NetworkPolicy lets the weightfs
    pods in, and the rack's DaemonSet points proxy= at the Service (then
    direct) on the same rack's nodes."""
    with open(os.path.join(RACK, "kubernetes.yaml")) as f:
        objs = [d for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for d in objs:
        assert d.get("apiVersion") and d.get("metadata", {}).get("name"), d
        by_kind.setdefault(d["kind"], []).append(d)
    cm = by_kind["ConfigMap"][0]
    with open(os.path.join(RACK, "nginx-http.conf.template")) as f:
        assert list(cm["data"].values()) == [f.read()], \
            "ConfigMap differs from nginx-http.conf.template"
    template = list(cm["data"].values())[0]
    dep = by_kind["Deployment"][0]
    pod = dep["spec"]["template"]
    for k, v in dep["spec"]["selector"]["matchLabels"].items():
        assert pod["metadata"]["labels"].get(k) == v
    c = pod["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in c["env"]}
    used = set(re.findall(r"\$\{(RACK_CACHE_[A-Z_]+)\}", template))
    assert used and used <= set(env), sorted(used - set(env))
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/etc/nginx/templates" in mounts  # the image's envsubst step
    assert env["RACK_CACHE_DIR"] in mounts
    port = int(env["RACK_CACHE_LISTEN"].rsplit(":", 1)[-1])
    svc = by_kind["Service"][0]
    for k, v in svc["spec"]["selector"].items():
        assert pod["metadata"]["labels"].get(k) == v
    assert svc["spec"]["ports"][0]["targetPort"] == port
    ds = by_kind["DaemonSet"][0]
    ds_pod = ds["spec"]["template"]
    cmd = " ".join(ds_pod["spec"]["containers"][0]["args"])
    m = re.search(r"proxy=http://([^:/|,']+):(\d+)\|direct'", cmd)
    assert m, "no quoted proxy=...|direct in %r" % cmd
    assert m.group(1) in ("%s.%s.svc" % (svc["metadata"]["name"],
                                         svc["metadata"]["namespace"]),
                          "%s.%s.svc.cluster.local" % (
                              svc["metadata"]["name"],
                              svc["metadata"]["namespace"]))
    assert int(m.group(2)) == svc["spec"]["ports"][0]["port"]
    assert ds_pod["spec"]["nodeSelector"] == pod["spec"]["nodeSelector"]
    ra = re.search(r"range_align=(\d+)M", cmd)
    assert ra and env["RACK_CACHE_SLICE"] == ra.group(1) + "m", \
        "the slice is not the nodes' range_align"
    origin = re.search(r"(http://\S+/) /mnt/", cmd).group(1)
    assert origin.split("/")[2] == env["RACK_CACHE_ORIGIN_HOST"]
    np = by_kind["NetworkPolicy"][0]
    for k, v in np["spec"]["podSelector"]["matchLabels"].items():
        assert pod["metadata"]["labels"].get(k) == v
    frm = np["spec"]["ingress"][0]["from"][0]
    for k, v in frm["podSelector"]["matchLabels"].items():
        assert ds_pod["metadata"]["labels"].get(k) == v
    assert frm["namespaceSelector"]["matchLabels"][
        "kubernetes.io/metadata.name"] == ds["metadata"]["namespace"]
