//! What the deployment files promise, checked: the Kubernetes manifests validate against
//! the Kubernetes JSON schemas (`kubernetes-validate`, which `.ci/run` installs; skipped,
//! saying so, without it) and carry the settings docs/DEPLOY.md relies on; the Dockerfile
//! runs the binary as a user without privileges.

use std::path::Path;
use std::process::Command;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes");
const MANIFESTS: &[&str] = &[
    "secret.yaml",
    "service-peers.yaml",
    "service-gateway.yaml",
    "statefulset.yaml",
    "poddisruptionbudget.yaml",
];

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(DIR).join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn the_manifests_validate_against_the_kubernetes_schemas() {
    let paths: Vec<_> = MANIFESTS.iter().map(|m| Path::new(DIR).join(m)).collect();
    let run = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .args(&paths)
        .output();
    match run {
        Err(_) => eprintln!(
            "SKIPPED: kubernetes-validate is not installed (pip install kubernetes-validate)"
        ),
        Ok(out) => assert!(
            out.status.success(),
            "the manifests do not validate:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

#[test]
fn the_manifests_carry_what_the_cluster_needs() {
    let peers = read("service-peers.yaml");
    assert!(peers.contains("clusterIP: None") && peers.contains("publishNotReadyAddresses: true"));
    assert!(
        peers.contains("protocol: UDP"),
        "membership runs over UDP on the same port"
    );
    let set = read("statefulset.yaml");
    for needed in [
        "--seed=meshrpc-peers.$(POD_NAMESPACE).svc.cluster.local:7000",
        "--advertise=$(POD_IP):7000",
        "fieldPath: status.podIP",
        "path: /ready",
        "path: /health",
        "terminationGracePeriodSeconds:",
        "runAsNonRoot: true",
        "name: MESHRPC_COOKIE",
        "name: MESHRPC_HTTP_TOKEN",
    ] {
        assert!(set.contains(needed), "statefulset.yaml lacks {needed}");
    }
    assert!(read("poddisruptionbudget.yaml").contains("maxUnavailable: 1"));
    let kustomization = read("kustomization.yaml");
    for manifest in MANIFESTS {
        assert!(
            kustomization.contains(manifest),
            "kustomization.yaml lacks {manifest}"
        );
    }
}

#[test]
fn the_image_runs_the_binary_as_an_unprivileged_user() {
    let docker = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"))
        .expect("Dockerfile");
    assert!(docker.contains("AS build"), "a build stage");
    assert!(
        docker.contains("FROM debian:bookworm-slim"),
        "a slim runtime stage"
    );
    assert!(docker.contains("USER 10001"), "not root");
    assert!(docker.contains("ENTRYPOINT [\"/usr/local/bin/meshrpc\"]"));
    let ignore = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.dockerignore"))
        .expect(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
}
