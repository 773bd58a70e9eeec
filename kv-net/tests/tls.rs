//! TLS with mutual authentication: certificates of the cluster's CA (made with rcgen) let
//! nodes talk; a certificate of another CA, a certificate naming another node, or a peer
//! without TLS is refused, and the listener keeps serving.
#![allow(clippy::unwrap_used)] // Test helpers outside #[test] fns unwrap too.

mod common;

use std::time::Duration;

use common::*;
use kv_net::{Error, Identity, Peers, Server, ServerOptions, Tls};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate authority: its certificate (PEM) and what signs with it.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A node's TLS settings: a certificate naming `node` (as a DNS name), signed by `signer`,
/// trusting `trusted`.
fn node_tls(node: &str, signer: &Ca, trusted: &Ca) -> Tls {
    let mut params = CertificateParams::new(vec![node.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, node);
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &signer.issuer).unwrap();
    Tls::from_pem(
        trusted.pem.as_bytes(),
        cert.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
    )
    .unwrap()
}

fn tls_server(tls: Tls) -> Server {
    Server::start(
        Identity::new(CLUSTER, "server"),
        ServerOptions::new().tls(tls),
        handler(Counts::default()),
    )
    .unwrap()
}

fn tls_client(name: &str, tls: Option<Tls>, server: &Server) -> Peers<Req, Resp> {
    let opts = match tls {
        Some(tls) => fast_options().tls(tls),
        None => fast_options(),
    };
    let peers = Peers::start(Identity::new(CLUSTER, name), opts).unwrap();
    peers.add_peer("server", server.local_addr()).unwrap();
    peers
}

fn wait_for_server_error(server: &Server, needle: &str) -> String {
    assert!(
        wait_until(LONG, || server
            .stats()
            .last_error
            .is_some_and(|e| e.contains(needle))),
        "{:?}",
        server.stats()
    );
    server.stats().last_error.unwrap()
}

#[test]
fn nodes_with_certificates_of_the_cluster_ca_talk_over_tls() {
    let cluster_ca = ca("cluster");
    let server = tls_server(node_tls("server", &cluster_ca, &cluster_ca));
    let peers = tls_client(
        "client",
        Some(node_tls("client", &cluster_ca, &cluster_ca)),
        &server,
    );
    assert!(peers.wait_connected("server", LONG), "{:?}", peers.status());
    for i in 0..20 {
        assert_eq!(
            peers.call_blocking("server", &Req::Echo(i), LONG).unwrap(),
            Resp::Num(i)
        );
    }
    assert!(wait_until(LONG, || peers.status()[0].rtt.is_some()));
    // A bulk stream to a server without a stream handler is refused, over TLS too: the
    // stream connection's TLS handshake and the verdict both work.
    let stream = peers.open_stream("server", b"x").unwrap();
    let err = stream.finish(LONG).unwrap_err();
    assert!(
        matches!(&err, Error::Stream { reason, .. } if reason.contains("accepts no bulk streams")),
        "{err}"
    );
}

#[test]
fn a_client_certificate_of_another_ca_is_refused() {
    let cluster_ca = ca("cluster");
    let rogue_ca = ca("rogue");
    let server = tls_server(node_tls("server", &cluster_ca, &cluster_ca));
    // It trusts the cluster's CA (so it would accept the server) but its own certificate is
    // the rogue's.
    let peers = tls_client(
        "client",
        Some(node_tls("client", &rogue_ca, &cluster_ca)),
        &server,
    );
    let err = wait_for_server_error(&server, "TLS handshake");
    assert!(
        !peers.wait_connected("server", Duration::from_millis(300)),
        "{err}"
    );
    assert!(server.stats().refused >= 1);

    let good = tls_client(
        "good",
        Some(node_tls("good", &cluster_ca, &cluster_ca)),
        &server,
    );
    assert!(good.wait_connected("server", LONG));
    assert_eq!(
        good.call_blocking("server", &Req::Echo(1), LONG).unwrap(),
        Resp::Num(1)
    );
}

#[test]
fn a_server_certificate_naming_another_node_is_refused_by_the_client() {
    let cluster_ca = ca("cluster");
    // The listener's certificate names "impostor", not "server".
    let server = tls_server(node_tls("impostor", &cluster_ca, &cluster_ca));
    let peers = tls_client(
        "client",
        Some(node_tls("client", &cluster_ca, &cluster_ca)),
        &server,
    );
    assert!(wait_until(LONG, || peers.status()[0]
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("TLS handshake"))));
    assert!(!peers.wait_connected("server", Duration::from_millis(200)));
}

#[test]
fn a_peer_without_tls_is_refused_by_a_tls_listener() {
    let cluster_ca = ca("cluster");
    let server = tls_server(node_tls("server", &cluster_ca, &cluster_ca));
    let plain = tls_client("client", None, &server);
    wait_for_server_error(&server, "TLS handshake");
    assert!(!plain.wait_connected("server", Duration::from_millis(300)));
}

#[test]
fn unreadable_pem_is_a_tls_error() {
    let err = Tls::from_pem(b"not pem", b"", b"").unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    let missing = std::path::Path::new("/nonexistent/ca.pem");
    let err = Tls::from_pem_files(missing, missing, missing).unwrap_err();
    assert!(
        matches!(&err, Error::TlsFile { path, .. } if path == missing),
        "{err}"
    );
}
