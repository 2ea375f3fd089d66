//! rcni-overlay to an etcd that requires TLS with client certificates (`--etcd-certfile/keyfile/cafile`):
//! a CA, a server certificate for 198.18.0.254 and a client certificate made with openssl in a temp dir.
//! Agents with the client certificate lease subnets and program each other; one without is refused by
//! etcd and says so in its status, holding nothing.

mod support;

use std::path::Path;
use std::time::Duration;
use support::TempDir;
use support::agent::{AgentNode, PREFIX};
use support::etcd::{ETCD_IP, Etcd, EtcdTls, wait_for};
use support::underlay::Switch;

const LONG: Duration = Duration::from_secs(30);

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA and two certificates it signs (EC P-256, valid one day).
fn certificates(dir: &TempDir) -> EtcdTls {
    let d = dir.path();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=rcni-test-ca", "-keyout", "ca.key", "-out", "ca.pem"];
    ca.extend(ec);
    openssl(d, &ca);
    for (name, ext) in [
        ("server", format!("subjectAltName=IP:{ETCD_IP}\nextendedKeyUsage=serverAuth,clientAuth\n")),
        ("client", "extendedKeyUsage=clientAuth\n".to_string()),
    ] {
        let (key, csr, pem, extf) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
        let subj = format!("/CN=rcni-{name}");
        let mut req = vec!["req", "-new", "-subj", &subj, "-keyout", &key, "-out", &csr];
        req.extend(ec);
        openssl(d, &req);
        std::fs::write(d.join(&extf), ext).unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-days",
                "1",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-extfile",
                &extf,
            ],
        );
    }
    EtcdTls {
        ca: d.join("ca.pem"),
        server_cert: d.join("server.pem"),
        server_key: d.join("server.key"),
        client_cert: d.join("client.pem"),
        client_key: d.join("client.key"),
    }
}

#[test]
fn agents_reach_etcd_over_tls_with_client_certificates() {
    let certs = TempDir::new("ovs-pki");
    let tls = certificates(&certs);
    let switch = Switch::new("ovs");
    let etcd = Etcd::start_with("ovs", &switch, Some(tls.clone()));
    assert!(etcd.url().starts_with("https://"));
    etcd.ctl(&["put", &format!("{PREFIX}/config"), r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#]).ok();
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let (ca, cert, key) = (s(&tls.ca), s(&tls.client_cert), s(&tls.client_key));
    let flags = ["--etcd-cafile", &ca, "--etcd-certfile", &cert, "--etcd-keyfile", &key];
    let nodes: Vec<AgentNode> =
        (1..=2).map(|i| AgentNode::with_flags("ovs", &switch, i, &etcd.url(), &flags)).collect();
    for n in &nodes {
        wait_for("the peer's route over a TLS-fed agent", LONG, || n.routes().lines().count() == 1);
    }
    assert_eq!(etcd.keys(PREFIX).len(), 2);

    // Without a client certificate etcd refuses the connection: an error in status, no lease.
    let lone = AgentNode::with_flags("ovs", &switch, 3, &etcd.url(), &["--etcd-cafile", &ca]);
    wait_for("the refused connection in status", LONG, || {
        lone.status()["last_error"].as_str().is_some_and(|e| e.contains("--etcd-certfile"))
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(etcd.keys(PREFIX).len(), 2, "no lease without a client certificate");
    assert!(lone.subnet_env().is_none());
    eprintln!("without a client certificate: {}", lone.status()["last_error"]);
}
