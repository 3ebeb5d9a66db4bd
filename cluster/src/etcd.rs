//! The etcd client: connection settings from the configuration, and the
//! few operations the cluster needs, each with a time limit and an error
//! that names what was asked.

use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse,
};

use crate::config::EtcdConfig;

/// Why a request to etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// etcd did not answer in time.
    #[error("etcd did not answer {what} within {} ms", .timeout.as_millis())]
    Timeout {
        /// The request.
        what: String,
        /// The limit.
        timeout: Duration,
    },
    /// etcd answered with an error, or could not be reached.
    #[error("etcd {what}: {source}{hint}", hint = closed_hint(.source))]
    Etcd {
        /// The request.
        what: String,
        /// The error.
        #[source]
        source: etcd_client::Error,
    },
    /// A file of the configuration could not be read.
    #[error("cannot read {path} (cluster.etcd): {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What to check when etcd closed the connection right after it was
/// opened (a broken pipe, a reset, or hyper's "connection closed" instead
/// of an answer): the usual sign of TLS settings etcd does not accept (a
/// missing or untrusted client certificate, plain http to a TLS-only
/// etcd), which the error alone does not name. Empty for any other error.
fn closed_hint(source: &etcd_client::Error) -> &'static str {
    use std::io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
    let mut next: Option<&(dyn std::error::Error + 'static)> = match source {
        etcd_client::Error::GRpcStatus(s) => Some(s),
        etcd_client::Error::TransportError(e) => Some(e),
        etcd_client::Error::IoError(e) => Some(e),
        _ => None,
    };
    while let Some(e) = next {
        let closed = match e.downcast_ref::<std::io::Error>() {
            Some(io) => matches!(io.kind(), BrokenPipe | ConnectionReset | UnexpectedEof),
            // hyper's cause when the peer closed the connection.
            None => e.to_string() == "connection closed",
        };
        if closed {
            return " (etcd closed the connection: unless it was restarting, it may serve \
                    TLS only, or require a client certificate it trusts; check the \
                    https:// endpoint and cluster.etcd.tls ca_file, cert_file and key_file)";
        }
        next = e.source();
    }
    ""
}

/// Runs `fut` with the time limit; `what` names the request in errors.
pub(crate) async fn timed<T>(
    timeout: Duration,
    what: impl Fn() -> String,
    fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(StoreError::Etcd {
            what: what(),
            source,
        }),
        Err(_) => Err(StoreError::Timeout {
            what: what(),
            timeout,
        }),
    }
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(|source| StoreError::File {
        path: path.to_owned(),
        source,
    })
}

/// Connection options from the configuration: TLS, authentication, and
/// HTTP/2 keep-alives so that a dead etcd is noticed within seconds.
fn options(config: &EtcdConfig, timeout: Duration) -> Result<ConnectOptions, StoreError> {
    let mut o = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_keep_alive(Duration::from_secs(2), timeout)
        .with_keep_alive_while_idle(true);
    if let Some(tls) = &config.tls {
        let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca_file)?));
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            t = t.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = &tls.server_name {
            t = t.domain_name(name.clone());
        }
        o = o.with_tls(t);
    }
    if let (Some(user), Some(file)) = (&config.username, &config.password_file) {
        let password = String::from_utf8_lossy(&read(file)?).trim_end().to_owned();
        o = o
            .with_user(user.clone(), password)
            .with_auto_token_refresh(true);
    }
    Ok(o)
}

/// Connects (with authentication, when configured: the only step that
/// needs etcd to answer).
pub(crate) async fn connect(config: &EtcdConfig, timeout: Duration) -> Result<Client, StoreError> {
    let opts = options(config, timeout)?;
    timed(
        timeout,
        || format!("connect to {}", config.endpoints.join(",")),
        Client::connect(&config.endpoints, Some(opts)),
    )
    .await
}

/// One key as listed.
#[derive(Debug, Clone)]
pub(crate) struct Kv {
    pub(crate) key: String,
    pub(crate) value: Vec<u8>,
    pub(crate) mod_revision: i64,
}

/// Every key under `prefix`, and the revision of the listing.
pub(crate) async fn list(
    client: &mut Client,
    prefix: &str,
    timeout: Duration,
) -> Result<(Vec<Kv>, i64), StoreError> {
    let resp = timed(
        timeout,
        || format!("list {prefix}"),
        client.get(prefix, Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let kvs = resp
        .kvs()
        .iter()
        .map(|kv| Kv {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: kv.value().to_vec(),
            mod_revision: kv.mod_revision(),
        })
        .collect();
    Ok((kvs, revision))
}

/// A key's value, if it exists.
pub(crate) async fn get(
    client: &mut Client,
    key: &str,
    timeout: Duration,
) -> Result<Option<Vec<u8>>, StoreError> {
    let resp = timed(timeout, || format!("get {key}"), client.get(key, None)).await?;
    Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
}

/// Runs a transaction; returns whether its conditions held, and the values
/// of the keys its `get`s read (absent keys give `None`).
pub(crate) async fn txn(
    client: &mut Client,
    what: &str,
    when: Vec<Compare>,
    then: Vec<TxnOp>,
    otherwise: Vec<TxnOp>,
    timeout: Duration,
) -> Result<(bool, Vec<Option<Vec<u8>>>), StoreError> {
    let t = Txn::new().when(when).and_then(then).or_else(otherwise);
    let resp = timed(timeout, || what.to_owned(), client.txn(t)).await?;
    let values = resp
        .op_responses()
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g.kvs().first().map(|kv| kv.value().to_vec())),
            _ => None,
        })
        .collect();
    Ok((resp.succeeded(), values))
}

/// `version(key) == 0`: the key does not exist.
pub(crate) fn absent(key: &str) -> Compare {
    Compare::version(key, CompareOp::Equal, 0)
}

/// `value(key) == value`.
pub(crate) fn equals(key: &str, value: &[u8]) -> Compare {
    Compare::value(key, CompareOp::Equal, value)
}

/// `mod_revision(key) == revision`.
pub(crate) fn unchanged_since(key: &str, revision: i64) -> Compare {
    Compare::mod_revision(key, CompareOp::Equal, revision)
}

/// A put inside a transaction.
pub(crate) fn op_put(key: &str, value: &[u8], lease: Option<i64>) -> TxnOp {
    TxnOp::put(key, value, lease.map(|l| PutOptions::new().with_lease(l)))
}

/// A get inside a transaction.
pub(crate) fn op_get(key: &str) -> TxnOp {
    TxnOp::get(key, None)
}

/// A delete inside a transaction.
pub(crate) fn op_delete(key: &str) -> TxnOp {
    TxnOp::delete(key, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_connection_names_the_tls_settings_other_errors_do_not() {
        let closed = |kind| StoreError::Etcd {
            what: "connect to https://e:2379".into(),
            source: etcd_client::Error::IoError(std::io::Error::new(kind, "stream closed")),
        };
        for kind in [
            std::io::ErrorKind::BrokenPipe,
            std::io::ErrorKind::ConnectionReset,
            std::io::ErrorKind::UnexpectedEof,
        ] {
            let m = closed(kind).to_string();
            assert!(
                m.contains("cluster.etcd.tls ca_file, cert_file and key_file"),
                "{m}"
            );
        }
        let refused = closed(std::io::ErrorKind::ConnectionRefused).to_string();
        assert_eq!(
            refused,
            "etcd connect to https://e:2379: io error: stream closed"
        );
        let auth = StoreError::Etcd {
            what: "connect".into(),
            source: etcd_client::Error::InvalidArgs("x".into()),
        };
        assert_eq!(auth.to_string(), "etcd connect: invalid arguments: x");
    }
}
