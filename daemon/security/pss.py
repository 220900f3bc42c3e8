"""Pod Security Standards constants, as kube-apiserver's pod-security-admission applies
them (k8s.io/pod-security-admission/policy, check_*.go), so a view can say what lies
outside a level without each check repeating the lists."""

from __future__ import annotations

# Baseline: capabilities a container may add (the container runtime's default set).
BASELINE_CAPABILITIES: frozenset[str] = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})

# Restricted: the one capability a container may add (after dropping ALL).
RESTRICTED_CAPABILITIES: frozenset[str] = frozenset({"NET_BIND_SERVICE"})

# Baseline: sysctls namespaced per Pod and isolated from other Pods on the node (the
# 1.0 set, net.ipv4.ip_local_reserved_ports from 1.27, the TCP keepalive/fin ones
# from 1.29).
SAFE_SYSCTLS: frozenset[str] = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes"})

# Restricted: the inline volume sources a Pod may use (anything else, e.g. nfs,
# iscsi, gitRepo, and hostPath, which the baseline already forbids, is refused).
RESTRICTED_VOLUME_TYPES: frozenset[str] = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret"})

# Baseline: SELinux types a Pod or container may set ("" is unset).
SELINUX_TYPES: tuple[str, ...] = (
    "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t")

# Profile types of the securityContext fields; the deprecated AppArmor annotation's
# values map onto them.
RUNTIME_DEFAULT = "RuntimeDefault"
LOCALHOST = "Localhost"
UNCONFINED = "Unconfined"

APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"
ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"


def annotation_profile(value: str) -> str:
    """The profile type a deprecated AppArmor annotation value means; any other value is
    kept as written, so a check still sees it is none of the allowed ones."""
    if value == "runtime/default":
        return RUNTIME_DEFAULT
    if value.startswith("localhost/"):
        return LOCALHOST
    if value == "unconfined":
        return UNCONFINED
    return value
