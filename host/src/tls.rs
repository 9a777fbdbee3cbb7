//! TLS configuration (rustls, ring provider): listener certificates chosen by SNI, optional
//! client-certificate verification, and client configurations for upstreams.
//!
//! Only TLS 1.2 and 1.3 are enabled, with rustls' default cipher suites (ECDHE + AEAD only).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring as provider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::{ListenerTls, UpstreamTls};

/// ALPN protocol ids offered by listeners, preferred first.
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN id of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

static VERSIONS: [&rustls::SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];

fn versions() -> &'static [&'static rustls::SupportedProtocolVersion] {
    &VERSIONS
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(provider::default_provider())
}

/// Reads a PEM certificate chain.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid PEM in {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {}", path.display()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| format!("invalid PEM in {}: {e}", path.display()))?
        .ok_or_else(|| format!("no private key found in {}", path.display()))
}

fn roots(path: &Path) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for c in load_certs(path)? {
        store
            .add(c)
            .map_err(|e| format!("unusable CA certificate in {}: {e}", path.display()))?;
    }
    Ok(store)
}

/// One certificate with its leaf, for SNI selection.
struct SniCert {
    key: Arc<CertifiedKey>,
}

/// Picks the first certificate valid for the client's SNI name, else the first one.
struct SniResolver {
    certs: Vec<SniCert>,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SniResolver({} certificates)", self.certs.len())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name()
            && let Ok(name) = ServerName::try_from(name)
        {
            for c in &self.certs {
                let leaf = &c.key.cert[0];
                if let Ok(ee) = webpki::EndEntityCert::try_from(leaf)
                    && ee.verify_is_valid_for_subject_name(&name).is_ok()
                {
                    return Some(c.key.clone());
                }
            }
        }
        self.certs.first().map(|c| c.key.clone())
    }
}

/// Errors by field: `(field, message)`, so that callers can locate them in the config.
pub type FieldErrors = Vec<(String, String)>;

/// Builds a listener's rustls configuration.
pub fn server_config(tls: &ListenerTls) -> Result<Arc<ServerConfig>, FieldErrors> {
    let provider = provider();
    let mut errors = Vec::new();
    let mut certs = Vec::new();
    if tls.certificates.is_empty() {
        errors.push((
            "certificates".into(),
            "at least one certificate is required".into(),
        ));
    }
    for (i, pair) in tls.certificates.iter().enumerate() {
        let chain =
            load_certs(&pair.cert).map_err(|e| errors.push((format!("certificates[{i}].cert"), e)));
        let key =
            load_key(&pair.key).map_err(|e| errors.push((format!("certificates[{i}].key"), e)));
        if let (Ok(chain), Ok(key)) = (chain, key) {
            match CertifiedKey::from_der(chain, key, &provider) {
                Ok(k) => certs.push(SniCert { key: Arc::new(k) }),
                Err(e) => errors.push((
                    format!("certificates[{i}].key"),
                    format!("key does not match the certificate or is unsupported: {e}"),
                )),
            }
        }
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions())
        .map_err(|e| vec![("certificates".into(), e.to_string())])?;
    let builder = match &tls.client_ca {
        // Without a CA no client certificate is asked for: a setting that says one is
        // required (or optional) would be silently ignored.
        None if tls.client_cert_required.is_some() => {
            errors.push((
                "client_cert_required".into(),
                "needs client_ca (the CA client certificates must chain to)".into(),
            ));
            builder.with_no_client_auth()
        }
        None => builder.with_no_client_auth(),
        Some(ca) => match roots(ca) {
            Ok(store) => {
                let v = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider);
                let v = if tls.client_cert_required.unwrap_or(true) {
                    v.build()
                } else {
                    v.allow_unauthenticated().build()
                };
                match v {
                    Ok(v) => builder.with_client_cert_verifier(v),
                    Err(e) => {
                        errors.push(("client_ca".into(), e.to_string()));
                        return Err(errors);
                    }
                }
            }
            Err(e) => {
                errors.push(("client_ca".into(), e));
                return Err(errors);
            }
        },
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut cfg = builder.with_cert_resolver(Arc::new(SniResolver { certs }));
    cfg.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
    Ok(Arc::new(cfg))
}

/// Builds the client configuration for an upstream's TLS.
pub fn client_config(tls: &UpstreamTls, h2: bool) -> Result<Arc<ClientConfig>, FieldErrors> {
    let store = roots(&tls.ca).map_err(|e| vec![("ca".to_string(), e)])?;
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions())
        .map_err(|e| vec![("ca".to_string(), e.to_string())])?
        .with_root_certificates(store)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![if h2 { ALPN_H2 } else { ALPN_HTTP1 }.to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_cert_required_without_a_client_ca_is_an_error_not_ignored() {
        let tls = ListenerTls {
            certificates: Vec::new(),
            client_ca: None,
            client_cert_required: Some(true),
        };
        let fields: Vec<String> = server_config(&tls)
            .expect_err("accepted")
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(fields, ["certificates", "client_cert_required"]);
    }
}
