"""Every Pod Security Standards check gives the verdict the standards give.

A Pod meets a level when none of that level's checks finds it: baseline when no PSS-B-*
check holds, restricted when no PSS-B-* and no PSS-R-* check does (restricted includes
everything of baseline). The cases come from two places, named beside each:

- [docs]: the example Pods of the Kubernetes documentation (kubernetes/website,
  content/en/examples/...), with the verdict the documentation gives or shows
  (images renamed; they play no part in a verdict);
- [psa]: the pass/fail fixtures of kube-apiserver's Pod Security admission
  (k8s.io/pod-security-admission, test/fixtures_<check>.go), each a tweak of its
  minimal restricted Pod (one container, one initContainer), at Kubernetes 1.35.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from daemon.actions.params import ACTIONS
from daemon.engine.ruleset import RuleSet, load_ruleset
from daemon.security.events import posture_event
from daemon.security.findings import evaluate
from tests.test_security_checks_kube import RULE_FILES

Pod = dict[str, Any]
ALLOW, DENY = True, False


def pod(spec: dict[str, Any], name: str = "example",
        annotations: dict[str, str] | None = None) -> Pod:
    metadata: dict[str, Any] = {"name": name}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def restricted_base() -> Pod:
    """The admission tests' minimal Pod that meets restricted."""
    hardened = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    return pod({
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "c", "image": "pause", "securityContext": copy.deepcopy(hardened)}],
        "initContainers": [{"name": "i", "image": "pause",
                            "securityContext": copy.deepcopy(hardened)}],
    })


def tweak(change: Callable[[Pod], object]) -> Pod:
    subject = restricted_base()
    change(subject)
    return subject


def psc(p: Pod) -> dict[str, Any]:
    context: dict[str, Any] = p["spec"]["securityContext"]
    return context


def csc(p: Pod, which: str = "containers") -> dict[str, Any]:
    context: dict[str, Any] = p["spec"][which][0]["securityContext"]
    return context


def isc(p: Pod) -> dict[str, Any]:
    return csc(p, "initContainers")


def volume(**source: Any) -> Callable[[Pod], object]:
    return lambda p: p["spec"].setdefault("volumes", []).append({"name": "v", **source})


def selinux_type(value: str) -> Callable[[Pod], object]:
    return lambda p: (psc(p).update(seLinuxOptions={"type": value, "level": "s0:c1,c2"}),
                      csc(p).update(seLinuxOptions={"type": value}))


SAFE_SYSCTLS = ["kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"]
BASELINE_CAPS = ["AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                 "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"]
EVERY_CAP = ["SYS_TIME", "SYS_MODULE", "SYS_RAWIO", "SYS_PACCT", "SYS_ADMIN", "SYS_NICE",
             "SYS_RESOURCE", "SYS_TTY_CONFIG", "MKNOD", "AUDIT_WRITE", "AUDIT_CONTROL",
             "MAC_OVERRIDE", "MAC_ADMIN", "NET_ADMIN", "SYSLOG", "CHOWN", "NET_RAW",
             "DAC_OVERRIDE", "FOWNER", "DAC_READ_SEARCH", "FSETID", "KILL", "SETGID", "SETUID",
             "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "IPC_LOCK", "IPC_OWNER",
             "SYS_CHROOT", "SYS_PTRACE", "SYS_BOOT", "LEASE", "SETFCAP", "WAKE_ALARM",
             "BLOCK_SUSPEND"]

# (case, Pod, baseline verdict, restricted verdict)
CASES: list[tuple[str, Pod, bool, bool]] = [
    # [docs] tutorials/security/ns-level-pss: examples/security/example-baseline-pod.yaml is
    # admitted under baseline, with restricted warnings (allowPrivilegeEscalation != false,
    # unrestricted capabilities, runAsNonRoot != true, seccompProfile).
    ("docs example-baseline-pod", pod({"containers": [
        {"name": "nginx", "image": "nginx", "ports": [{"containerPort": 80}]}]}, "nginx"),
     ALLOW, DENY),
    # [docs] tasks/configure-pod-container/security-context: examples/pods/security/
    # security-context.yaml (runAsUser 1000, fsGroup, allowPrivilegeEscalation false).
    ("docs security-context", pod({
        "securityContext": {"runAsUser": 1000, "fsGroup": 2000},
        "volumes": [{"name": "sec-ctx-vol", "emptyDir": {}}],
        "containers": [{"name": "sec-ctx-demo", "image": "node-hello:1.0",
                        "volumeMounts": [{"name": "sec-ctx-vol", "mountPath": "/data/demo"}],
                        "securityContext": {"allowPrivilegeEscalation": False}}]}),
     ALLOW, DENY),
    # [docs] same page, security-context-4.yaml: adds NET_ADMIN and SYS_TIME, which the
    # baseline's Capabilities control forbids.
    ("docs security-context-4", pod({"containers": [{
        "name": "sec-ctx-4", "image": "hello-app:2.0",
        "securityContext": {"capabilities": {"add": ["NET_ADMIN", "SYS_TIME"]}}}]}),
     DENY, DENY),
    # [docs] same page, security-context-5.yaml (runAsUser, runAsGroup, supplementalGroups).
    ("docs security-context-5", pod({
        "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "supplementalGroups": [4000]},
        "containers": [{"name": "sec-ctx-demo", "image": "agnhost:2.45",
                        "securityContext": {"allowPrivilegeEscalation": False}}]}),
     ALLOW, DENY),
    # [docs] tutorials/security/seccomp: examples/pods/security/seccomp/ga/default-pod.yaml
    # and violation-pod.yaml (RuntimeDefault, Localhost: both allowed by both levels'
    # Seccomp controls; restricted still wants runAsNonRoot and drop ALL).
    ("docs seccomp default-pod", pod({
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "test-container", "image": "http-echo:1.0",
                        "securityContext": {"allowPrivilegeEscalation": False}}]}),
     ALLOW, DENY),
    ("docs seccomp violation-pod", pod({
        "securityContext": {"seccompProfile": {"type": "Localhost",
                                               "localhostProfile": "profiles/violation.json"}},
        "containers": [{"name": "test-container", "image": "http-echo:1.0",
                        "securityContext": {"allowPrivilegeEscalation": False}}]}),
     ALLOW, DENY),
    # [docs] tutorials/security/apparmor: hello-apparmor.yaml (a Localhost profile).
    ("docs hello-apparmor", pod({"containers": [{
        "name": "hello", "image": "busybox:1.28",
        "securityContext": {"appArmorProfile": {
            "type": "Localhost", "localhostProfile": "k8s-apparmor-example-deny-write"}}}]}),
     ALLOW, DENY),
    # [docs] concepts/security/pod-security-standards: the restricted profile, as the
    # admission tests' minimal restricted Pod meets it.
    ("psa restricted base", restricted_base(), ALLOW, ALLOW),

    # --- baseline controls -----------------------------------------------------------
    # [psa] fixtures_hostNamespaces.go
    ("psa hostNetwork", tweak(lambda p: p["spec"].update(hostNetwork=True)), DENY, DENY),
    ("psa hostPID", tweak(lambda p: p["spec"].update(hostPID=True)), DENY, DENY),
    ("psa hostIPC", tweak(lambda p: p["spec"].update(hostIPC=True)), DENY, DENY),
    ("psa host namespaces false", tweak(lambda p: p["spec"].update(
        hostNetwork=False, hostPID=False, hostIPC=False)), ALLOW, ALLOW),
    # [psa] fixtures_privileged.go
    ("psa privileged container", tweak(lambda p: csc(p).update(privileged=True)), DENY, DENY),
    ("psa privileged initContainer", tweak(lambda p: isc(p).update(privileged=True)),
     DENY, DENY),
    ("psa privileged false", tweak(lambda p: csc(p).update(privileged=False)), ALLOW, ALLOW),
    # [psa] fixtures_capabilities_baseline.go: the default set may be added (restricted
    # then refuses all but NET_BIND_SERVICE), anything else may not.
    ("psa add default set", tweak(lambda p: csc(p)["capabilities"].update(add=BASELINE_CAPS)),
     ALLOW, DENY),
    ("psa add NET_RAW", tweak(lambda p: csc(p)["capabilities"].update(add=["NET_RAW"])),
     DENY, DENY),
    ("psa add SYS_ADMIN initContainer", tweak(
        lambda p: isc(p)["capabilities"].update(add=["SYS_ADMIN"])), DENY, DENY),
    # [psa] fixtures_hostPathVolumes.go
    ("psa hostPath", tweak(volume(hostPath={"path": "/a"})), DENY, DENY),
    # [psa] fixtures_hostPorts.go
    ("psa hostPort container", tweak(lambda p: p["spec"]["containers"][0].update(
        ports=[{"containerPort": 12345, "hostPort": 12345}])), DENY, DENY),
    ("psa hostPort initContainer", tweak(lambda p: p["spec"]["initContainers"][0].update(
        ports=[{"containerPort": 12346, "hostPort": 12346}])), DENY, DENY),
    ("psa hostPort 0", tweak(lambda p: p["spec"]["containers"][0].update(
        ports=[{"containerPort": 12345, "hostPort": 0}])), ALLOW, ALLOW),
    # [psa] fixtures_appArmorProfile.go (annotations and the securityContext field)
    ("psa apparmor annotations allowed", tweak(lambda p: p["metadata"].update(annotations={
        "container.apparmor.security.beta.kubernetes.io/c": "runtime/default",
        "container.apparmor.security.beta.kubernetes.io/i": "localhost/foo"})), ALLOW, ALLOW),
    ("psa apparmor annotation unconfined", tweak(lambda p: p["metadata"].update(annotations={
        "container.apparmor.security.beta.kubernetes.io/c": "unconfined"})), DENY, DENY),
    ("psa apparmor annotation unconfined initContainer", tweak(
        lambda p: p["metadata"].update(annotations={
            "container.apparmor.security.beta.kubernetes.io/i": "unconfined"})), DENY, DENY),
    ("psa apparmor field allowed", tweak(lambda p: (
        psc(p).update(appArmorProfile={"type": "RuntimeDefault"}),
        csc(p).update(appArmorProfile={"type": "Localhost", "localhostProfile": "foo"}))),
     ALLOW, ALLOW),
    ("psa apparmor field pod unconfined", tweak(
        lambda p: psc(p).update(appArmorProfile={"type": "Unconfined"})), DENY, DENY),
    ("psa apparmor field container unconfined", tweak(
        lambda p: isc(p).update(appArmorProfile={"type": "Unconfined"})), DENY, DENY),
    # [psa] fixtures_seLinuxOptions.go
    *[(f"psa selinux type {t or 'empty'}", tweak(selinux_type(t)), ALLOW, ALLOW)
      for t in ("", "container_t", "container_init_t", "container_kvm_t",
                "container_engine_t")],
    ("psa selinux type bar pod", tweak(lambda p: psc(p).update(seLinuxOptions={"type": "bar"})),
     DENY, DENY),
    ("psa selinux user container", tweak(
        lambda p: csc(p).update(seLinuxOptions={"user": "bar"})), DENY, DENY),
    ("psa selinux role initContainer", tweak(
        lambda p: isc(p).update(seLinuxOptions={"role": "bar"})), DENY, DENY),
    # [psa] fixtures_procMount.go (1.35: a Pod in a user namespace may unmask /proc under
    # baseline; restricted still refuses it)
    ("psa procMount Default", tweak(lambda p: csc(p).update(procMount="Default")), ALLOW, ALLOW),
    ("psa procMount Unmasked", tweak(lambda p: csc(p).update(procMount="Unmasked")),
     DENY, DENY),
    ("psa procMount Unmasked initContainer", tweak(lambda p: isc(p).update(procMount="Unmasked")),
     DENY, DENY),
    ("psa procMount Unmasked hostUsers false", tweak(lambda p: (
        p["spec"].update(hostUsers=False), csc(p).update(procMount="Unmasked"))), ALLOW, DENY),
    # [psa] fixtures_seccompProfile_baseline.go
    ("psa seccomp pod Unconfined", tweak(
        lambda p: psc(p).update(seccompProfile={"type": "Unconfined"})), DENY, DENY),
    ("psa seccomp container Unconfined", tweak(
        lambda p: csc(p).update(seccompProfile={"type": "Unconfined"})), DENY, DENY),
    # [psa] fixtures_sysctls.go (the 1.29 safe set)
    ("psa sysctls safe", tweak(lambda p: psc(p).update(
        sysctls=[{"name": s, "value": "1"} for s in SAFE_SYSCTLS])), ALLOW, ALLOW),
    ("psa sysctls other", tweak(lambda p: psc(p).update(
        sysctls=[{"name": "othersysctl", "value": "other"}])), DENY, DENY),
    # [psa] fixtures_windowsHostProcess.go
    ("psa hostProcess pod", tweak(lambda p: psc(p).update(
        windowsOptions={"hostProcess": True})), DENY, DENY),
    ("psa hostProcess container", tweak(lambda p: csc(p).update(
        windowsOptions={"hostProcess": True})), DENY, DENY),
    ("psa hostProcess false", tweak(lambda p: psc(p).update(
        windowsOptions={"hostProcess": False})), ALLOW, ALLOW),

    # [psa] fixtures_hostProbesAndHostLifecycle.go (1.34)
    ("psa probe host empty", tweak(lambda p: p["spec"]["containers"][0].update(
        livenessProbe={"httpGet": {"port": 8080, "host": ""}})), ALLOW, ALLOW),
    ("psa probe httpGet host", tweak(lambda p: p["spec"]["containers"][0].update(
        readinessProbe={"httpGet": {"port": 8080, "host": "bad.host"}})), DENY, DENY),
    ("psa probe tcpSocket host initContainer", tweak(lambda p: p["spec"]["initContainers"][0]
                                                     .update(startupProbe={"tcpSocket": {
                                                         "port": 8080, "host": "bad.host"}})),
     DENY, DENY),
    ("psa lifecycle httpGet host", tweak(lambda p: p["spec"]["containers"][0].update(
        lifecycle={"postStart": {"httpGet": {"port": 8080, "host": "bad.host"}}})), DENY, DENY),

    # --- restricted controls ---------------------------------------------------------
    # [psa] fixtures_allowPrivilegeEscalation.go (Windows Pods exempt from 1.25)
    ("psa allowPrivilegeEscalation unset", tweak(
        lambda p: csc(p).pop("allowPrivilegeEscalation")), ALLOW, DENY),
    ("psa allowPrivilegeEscalation true", tweak(
        lambda p: csc(p).update(allowPrivilegeEscalation=True)), ALLOW, DENY),
    ("psa allowPrivilegeEscalation true initContainer", tweak(
        lambda p: isc(p).update(allowPrivilegeEscalation=True)), ALLOW, DENY),
    ("psa allowPrivilegeEscalation unset windows", tweak(lambda p: (
        p["spec"].update(os={"name": "windows"}), csc(p).pop("allowPrivilegeEscalation"))),
     ALLOW, ALLOW),
    # [psa] fixtures_runAsNonRoot.go (relaxed for Pods in a user namespace)
    ("psa runAsNonRoot pod false", tweak(lambda p: psc(p).update(runAsNonRoot=False)),
     ALLOW, DENY),
    ("psa runAsNonRoot container false", tweak(lambda p: csc(p).update(runAsNonRoot=False)),
     ALLOW, DENY),
    ("psa runAsNonRoot unset", tweak(lambda p: psc(p).pop("runAsNonRoot")), ALLOW, DENY),
    ("psa runAsNonRoot on every container", tweak(lambda p: (
        psc(p).pop("runAsNonRoot"), csc(p).update(runAsNonRoot=True),
        isc(p).update(runAsNonRoot=True))), ALLOW, ALLOW),
    ("psa runAsNonRoot unset hostUsers false", tweak(lambda p: (
        psc(p).pop("runAsNonRoot"), p["spec"].update(hostUsers=False))), ALLOW, ALLOW),
    # [psa] fixtures_runAsUser.go
    ("psa runAsUser pod 0", tweak(lambda p: psc(p).update(runAsUser=0)), ALLOW, DENY),
    ("psa runAsUser container 0", tweak(lambda p: csc(p).update(runAsUser=0)), ALLOW, DENY),
    ("psa runAsUser initContainer 0", tweak(lambda p: isc(p).update(runAsUser=0)), ALLOW, DENY),
    ("psa runAsUser 1000", tweak(lambda p: psc(p).update(runAsUser=1000)), ALLOW, ALLOW),
    ("psa runAsUser 0 hostUsers false", tweak(lambda p: (
        psc(p).update(runAsUser=0), p["spec"].update(hostUsers=False))), ALLOW, ALLOW),
    # [psa] check_seccompProfile_restricted.go: from 1.19 only the fields count; the
    # deprecated annotation no longer confines anything (the kubelet ignores it).
    ("psa seccomp annotation only", tweak(lambda p: (
        psc(p).pop("seccompProfile"), p["metadata"].update(annotations={
            "seccomp.security.alpha.kubernetes.io/pod": "runtime/default"}))), ALLOW, DENY),
    # [psa] fixtures_seccompProfile_restricted.go
    ("psa seccomp pod Localhost", tweak(lambda p: psc(p).update(
        seccompProfile={"type": "Localhost", "localhostProfile": "testing"})), ALLOW, ALLOW),
    ("psa seccomp on each container", tweak(lambda p: (
        psc(p).pop("seccompProfile"), csc(p).update(seccompProfile={"type": "RuntimeDefault"}),
        isc(p).update(seccompProfile={"type": "Localhost", "localhostProfile": "testing"}))),
     ALLOW, ALLOW),
    ("psa seccomp unset everywhere", tweak(lambda p: psc(p).pop("seccompProfile")),
     ALLOW, DENY),
    ("psa seccomp unset initContainer", tweak(lambda p: (
        psc(p).pop("seccompProfile"),
        csc(p).update(seccompProfile={"type": "RuntimeDefault"}))), ALLOW, DENY),
    ("psa seccomp unset container", tweak(lambda p: (
        psc(p).pop("seccompProfile"),
        isc(p).update(seccompProfile={"type": "RuntimeDefault"}))), ALLOW, DENY),
    ("psa seccomp initContainer Unconfined", tweak(lambda p: (
        psc(p).pop("seccompProfile"), csc(p).update(seccompProfile={"type": "RuntimeDefault"}),
        isc(p).update(seccompProfile={"type": "Unconfined"}))), DENY, DENY),
    # [psa] fixtures_capabilities_restricted.go
    ("psa drop ALL add NET_BIND_SERVICE", tweak(lambda p: (
        csc(p)["capabilities"].update(add=["NET_BIND_SERVICE"]),
        isc(p)["capabilities"].update(add=["NET_BIND_SERVICE"]))), ALLOW, ALLOW),
    ("psa drop nothing container", tweak(lambda p: csc(p)["capabilities"].update(drop=[])),
     ALLOW, DENY),
    ("psa drop nothing initContainer", tweak(lambda p: isc(p)["capabilities"].update(drop=[])),
     ALLOW, DENY),
    ("psa drop every capability by name", tweak(lambda p: (
        csc(p)["capabilities"].update(drop=EVERY_CAP),
        isc(p)["capabilities"].update(drop=EVERY_CAP))), ALLOW, DENY),
    ("psa drop ALL add back the default set", tweak(
        lambda p: csc(p)["capabilities"].update(add=BASELINE_CAPS)), ALLOW, DENY),
    # [psa] fixtures_restrictedVolumes.go
    *[(f"psa volume {kind}", tweak(volume(**{kind: source})), ALLOW, ALLOW)
      for kind, source in [
          ("configMap", {"name": "c"}), ("csi", {"driver": "inline.storage.example"}),
          ("downwardAPI", {"items": []}), ("emptyDir", {}),
          ("ephemeral", {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}}),
          ("persistentVolumeClaim", {"claimName": "c"}), ("projected", {"sources": []}),
          ("secret", {"secretName": "s"})]],
    *[(f"psa volume {kind}", tweak(volume(**{kind: source})), ALLOW, DENY)
      for kind, source in [
          ("gcePersistentDisk", {"pdName": "d"}), ("awsElasticBlockStore", {"volumeID": "v"}),
          ("gitRepo", {"repository": "r"}), ("nfs", {"server": "s", "path": "/"}),
          ("iscsi", {"targetPortal": "p", "iqn": "q", "lun": 0}),
          ("glusterfs", {"endpoints": "e", "path": "p"}),
          ("rbd", {"monitors": ["m"], "image": "i"}),
          ("flexVolume", {"driver": "d"}), ("cinder", {"volumeID": "v"}),
          ("cephfs", {"monitors": ["m"]}), ("fc", {"wwids": ["w"]}),
          ("azureFile", {"secretName": "s", "shareName": "s"}),
          ("azureDisk", {"diskName": "d", "diskURI": "u"}),
          ("portworxVolume", {"volumeID": "v"}), ("scaleIO", {"gateway": "g", "system": "s"}),
          ("storageos", {"volumeName": "v"}), ("quobyte", {"registry": "r", "volume": "v"}),
          ("vsphereVolume", {"volumePath": "p"}), ("flocker", {"datasetName": "d"})]],
]


@pytest.fixture(scope="module")
def ruleset() -> RuleSet:
    loaded, errors = load_ruleset(RULE_FILES, ACTIONS)
    assert not errors, errors
    return loaded


def found(ruleset: RuleSet, subject: Pod) -> set[str]:
    event = posture_event("kubernetes", subject, origin="manifest")
    return {f.check for f in evaluate(ruleset, [event]) if f.check.startswith("PSS-")}


@pytest.mark.parametrize(("subject", "baseline", "restricted"),
                         [pytest.param(p, b, r, id=case) for case, p, b, r in CASES])
def test_the_verdict_of_the_standards(ruleset: RuleSet, subject: Pod, baseline: bool,
                                      restricted: bool) -> None:
    ids = found(ruleset, subject)
    meets_baseline = not any(i.startswith("PSS-B-") for i in ids)
    meets_restricted = meets_baseline and not any(i.startswith("PSS-R-") for i in ids)
    assert (meets_baseline, meets_restricted) == (baseline, restricted), ids


def test_every_pss_check_refuses_some_case(ruleset: RuleSet) -> None:
    pss = {c.rule.security.id for c in ruleset.rules
           if c.rule.security is not None and c.rule.security.id.startswith("PSS-")}
    refused = set().union(*(found(ruleset, p) for _, p, _, _ in CASES))
    assert refused == pss
