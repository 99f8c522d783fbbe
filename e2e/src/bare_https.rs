//! HTTP/1.1 over TLS to a master's API port, trusting the cluster's CA
//! (read from the master's admin.conf) and showing no client certificate:
//! what a pod has, the CA and perhaps a service account token (sent as
//! `Authorization: Bearer`). One request per connection; the answer's
//! status code and (de-chunked) body.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::credentials::admin_conf;

/// How long an answer may take.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// One request to the master at `api_addr`: `method` on `path`, with
/// `bearer` as its token when given and `body` as JSON when given.
pub async fn request(
    api_addr: &str,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    skiff_security::install_crypto_provider();
    let credentials = skiff_security::Credentials::load(&admin_conf(api_addr)?)?;
    let trusting_ca = skiff_security::tls::client_config(&credentials.ca_pem, None)?;
    let mut config = (*trusting_ca).clone();
    // No ALPN at all: the server then speaks HTTP/1.1, whatever it offers.
    config.alpn_protocols.clear();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from(skiff_security::MASTER_SERVER_NAME)?;
    let tcp = tokio::net::TcpStream::connect(api_addr).await?;
    let mut tls = connector.connect(name, tcp).await?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {api_addr}\r\nConnection: close\r\n");
    if let Some(token) = bearer {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    tls.write_all(head.as_bytes()).await?;
    tls.write_all(body.as_bytes()).await?;
    let mut raw = Vec::new();
    let read = tokio::time::timeout(ANSWER_WITHIN, tls.read_to_end(&mut raw));
    let read = read.await.context("no answer within 10 s")?;
    match read {
        Ok(_) => {}
        // A server may close without close_notify: what came is the answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(e).context("read the answer"),
    }
    parse_response(&String::from_utf8_lossy(&raw))
}

/// `GET path` with `bearer` as the token, if any.
pub async fn get(
    api_addr: &str,
    path: &str,
    bearer: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    request(api_addr, "GET", path, bearer, None).await
}

/// Status code and body of an HTTP/1.1 response, chunked or not.
fn parse_response(text: &str) -> anyhow::Result<(u16, String)> {
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        anyhow::bail!("no end of headers in {text:?}");
    };
    let Some(code) = head.split(' ').nth(1).and_then(|c| c.parse().ok()) else {
        anyhow::bail!("no status code in {head:?}");
    };
    let head = head.to_ascii_lowercase();
    if head.contains("transfer-encoding: chunked") {
        Ok((code, dechunk(body)?))
    } else {
        Ok((code, body.to_owned()))
    }
}

/// The body of a chunked transfer encoding.
fn dechunk(mut rest: &str) -> anyhow::Result<String> {
    let mut body = String::new();
    loop {
        let Some((line, after)) = rest.split_once("\r\n") else {
            anyhow::bail!("no chunk size line");
        };
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(hex, 16).context("chunk size")?;
        if size == 0 {
            return Ok(body);
        }
        let chunk = after.get(..size).context("short chunk")?;
        body.push_str(chunk);
        let next = after.get(size..).and_then(|r| r.strip_prefix("\r\n"));
        rest = next.context("chunk not ended by CRLF")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_and_plain_answers_are_read() {
        let plain = "HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (401, "{}".to_owned()));
        let chunked =
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (200, "abcde".to_owned()));
        assert!(parse_response("garbage").is_err());
    }
}
