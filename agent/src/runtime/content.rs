//! Writing blobs into containerd's content store. containerd's Write call
//! is a bidirectional stream: the client sends chunks at increasing
//! offsets, then a commit carrying the expected digest and size, and
//! containerd verifies both before the blob becomes visible. A blob that
//! fails verification is refused and nothing is kept.

use std::collections::HashMap;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use containerd_client::services::v1::{
    AbortRequest, InfoRequest, WriteAction, WriteContentRequest,
};
use tokio_stream::{Stream, StreamExt};

use super::{call, Containerd, Error, Result};

/// Bytes of a blob, in chunks of any size.
pub type BlobStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// How much data one Write message carries (containerd accepts 16 MiB).
const CHUNK: usize = 1 << 20;

impl Containerd {
    /// Whether the content store holds `digest`.
    pub async fn has_blob(&self, digest: &str) -> Result<bool> {
        match self
            .content()
            .info(self.request(InfoRequest {
                digest: digest.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(Error::Call {
                call: "content.info",
                status: s,
            }),
        }
    }

    /// Writes one blob, verified by containerd against `digest` and `size`.
    /// A blob that is already present is left as it is.
    pub async fn write_blob(
        &self,
        lease: &str,
        digest: &str,
        size: i64,
        labels: HashMap<String, String>,
        mut data: BlobStream,
    ) -> Result<()> {
        if self.has_blob(digest).await? {
            return Ok(());
        }
        let reference = format!("skiff-{digest}-{:08x}", rand::random::<u32>());
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
        let feeder_ref = reference.clone();
        let expected = digest.to_string();
        let feeder = tokio::spawn(async move {
            let mut offset = 0i64;
            let mut buffer = BytesMut::with_capacity(CHUNK);
            loop {
                let next = data.next().await;
                let done = match next {
                    Some(Ok(chunk)) => {
                        buffer.extend_from_slice(&chunk);
                        false
                    }
                    Some(Err(e)) => return Err(e.to_string()),
                    None => true,
                };
                if buffer.len() >= CHUNK || done {
                    let chunk = buffer.split().freeze();
                    let len = chunk.len() as i64;
                    let action = if done {
                        WriteAction::Commit
                    } else {
                        WriteAction::Write
                    };
                    let msg = WriteContentRequest {
                        action: action as i32,
                        r#ref: feeder_ref.clone(),
                        total: size,
                        expected: if done {
                            expected.clone()
                        } else {
                            String::new()
                        },
                        offset,
                        data: chunk.to_vec(),
                        labels: if done { labels.clone() } else { HashMap::new() },
                    };
                    offset += len;
                    if tx.send(msg).await.is_err() {
                        return Err("containerd closed the write stream".to_string());
                    }
                    if done {
                        return Ok(offset);
                    }
                }
            }
        });
        let response = self
            .content()
            .write(
                self.request_in_lease(tokio_stream::wrappers::ReceiverStream::new(rx), Some(lease)),
            )
            .await;
        let mut result = match response {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                let mut outcome = Ok(());
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(s) if s.code() == tonic::Code::AlreadyExists => break,
                        Err(s) => {
                            outcome = Err(Error::Call {
                                call: "content.write",
                                status: s,
                            });
                            break;
                        }
                    }
                }
                outcome
            }
            Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
            Err(s) => Err(Error::Call {
                call: "content.write",
                status: s,
            }),
        };
        match feeder.await {
            Ok(Ok(_)) => {}
            Ok(Err(message)) if result.is_ok() => {
                result = Err(Error::Image {
                    image: digest.to_string(),
                    message: format!("reading blob: {message}"),
                })
            }
            _ => {}
        }
        if result.is_err() {
            let _ = self
                .content()
                .abort(self.request_in_lease(AbortRequest { r#ref: reference }, Some(lease)))
                .await;
        }
        result
    }

    /// Writes a small blob held in memory.
    pub async fn write_bytes(
        &self,
        lease: &str,
        digest: &str,
        bytes: Vec<u8>,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let size = bytes.len() as i64;
        let stream: BlobStream = Box::pin(tokio_stream::once(Ok(Bytes::from(bytes))));
        self.write_blob(lease, digest, size, labels, stream).await
    }

    /// Reads a whole (small) blob: manifests and image configs.
    pub async fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        use containerd_client::services::v1::ReadContentRequest;
        let mut stream = self
            .content()
            .read(self.request(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(call("content.read"))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(call("content.read"))? {
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{:x}", sha2::Sha256::digest(data))
}
