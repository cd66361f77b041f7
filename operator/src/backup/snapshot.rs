//! An etcd snapshot taken through the gateway (`POST /v3/maintenance/snapshot`) and its
//! integrity check.
//!
//! The gateway streams the gRPC answer as newline-delimited JSON, one
//! `{"result":{"blob":"<base64>","remainingBytes":"…","version":"…"}}` per chunk, and
//! etcd ends the stream with one more chunk holding the sha256 of everything before
//! it. The snapshot file is the concatenation of every blob, trailer included (what
//! `etcdctl snapshot save` writes and `etcdutl snapshot restore` checks), so a file is
//! sound when its last 32 bytes are the sha256 of the rest.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http_body_util::BodyExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::resources::ETCD_CLIENT_PORT;
use crate::transport::TlsClient;

/// Length of the sha256 trailer etcd appends.
pub const TRAILER_LEN: usize = 32;

/// Hashes a stream whose last [`TRAILER_LEN`] bytes are the sha256 of the rest, without
/// knowing where it ends: the newest 32 bytes are held back until more arrive.
#[derive(Default)]
pub struct TrailerCheck {
    body: Sha256,
    whole: Sha256,
    held: Vec<u8>,
    total: u64,
}

impl TrailerCheck {
    /// Feeds the next bytes of the stream.
    pub fn update(&mut self, bytes: &[u8]) {
        self.whole.update(bytes);
        self.total += bytes.len() as u64;
        self.held.extend_from_slice(bytes);
        if self.held.len() > TRAILER_LEN {
            let release = self.held.len() - TRAILER_LEN;
            self.body.update(&self.held[..release]);
            self.held.drain(..release);
        }
    }

    /// The result: the sha256 of the whole stream (what the metadata records) when the
    /// trailer matches, else why not.
    pub fn finish(self) -> Result<Verified, String> {
        if self.held.len() < TRAILER_LEN {
            return Err(format!("snapshot of {} bytes is too short to hold its sha256 trailer", self.total));
        }
        let body: [u8; 32] = self.body.finalize().into();
        if body[..] != self.held[..] {
            return Err(format!(
                "snapshot integrity check failed: its sha256 trailer is {} but its {} bytes hash to {}",
                hex(&self.held),
                self.total - TRAILER_LEN as u64,
                hex(&body)
            ));
        }
        Ok(Verified { size: self.total, sha256: hex(&self.whole.finalize()) })
    }
}

/// A snapshot whose trailer matched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Bytes, trailer included.
    pub size: u64,
    /// sha256 of the whole file (trailer included), lowercase hex.
    pub sha256: String,
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Checks a whole snapshot file (see [`TrailerCheck`]).
pub async fn verify_file(path: &std::path::Path) -> Result<Verified, String> {
    use tokio::io::AsyncReadExt;
    let mut file =
        tokio::fs::File::open(path).await.map_err(|error| format!("open {}: {error}", path.display()))?;
    let mut check = TrailerCheck::default();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read =
            file.read(&mut buffer).await.map_err(|error| format!("read {}: {error}", path.display()))?;
        if read == 0 {
            break;
        }
        check.update(&buffer[..read]);
    }
    check.finish()
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    result: Option<Chunk>,
    #[serde(default)]
    error: Option<GatewayError>,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    blob: String,
    #[serde(default)]
    version: String,
}

#[derive(Deserialize)]
struct GatewayError {
    #[serde(default)]
    message: String,
}

/// What [`take`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taken {
    /// Size and hash.
    pub verified: Verified,
    /// The storage version etcd reported with the chunks (`3.6.0`), if any.
    pub storage_version: String,
}

/// Feeds newline-delimited gateway JSON to `write`, one decoded blob at a time. Pure
/// but for the callback; `pending` keeps a partial line between calls.
fn decode_lines(
    pending: &mut Vec<u8>,
    bytes: &[u8],
    mut write: impl FnMut(Vec<u8>, String),
) -> Result<(), String> {
    pending.extend_from_slice(bytes);
    while let Some(end) = pending.iter().position(|byte| *byte == b'\n') {
        let line: Vec<u8> = pending.drain(..=end).collect();
        decode_line(&line, &mut write)?;
    }
    Ok(())
}

fn decode_line(line: &[u8], write: &mut impl FnMut(Vec<u8>, String)) -> Result<(), String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let line: Line = serde_json::from_slice(line).map_err(|error| format!("snapshot stream: {error}"))?;
    if let Some(error) = line.error {
        return Err(format!("etcd refused the snapshot: {}", error.message));
    }
    let chunk = line.result.ok_or("snapshot stream: a line with neither result nor error")?;
    let blob =
        BASE64.decode(chunk.blob.as_bytes()).map_err(|error| format!("snapshot stream: blob: {error}"))?;
    write(blob, chunk.version);
    Ok(())
}

/// Streams a snapshot of the member at `address` (TLS name `server_name`) into
/// `file`, checking its trailer. `timeout` bounds the connection and each wait for
/// more data, not the whole transfer.
pub async fn take(
    client: &TlsClient,
    address: std::net::IpAddr,
    server_name: &str,
    file: &mut tokio::fs::File,
    timeout: Duration,
) -> Result<Taken, String> {
    let address = SocketAddr::new(address, ETCD_CLIENT_PORT as u16);
    let mut response = client
        .post_streaming(address, server_name, "/v3/maintenance/snapshot", "{}", timeout)
        .await
        .map_err(|error| error.to_string())?;
    if !response.status.is_success() {
        let body = tokio::time::timeout(timeout, response.body.collect())
            .await
            .ok()
            .and_then(Result::ok)
            .map(|body| String::from_utf8_lossy(&body.to_bytes()).trim().to_string())
            .unwrap_or_default();
        return Err(format!("/v3/maintenance/snapshot: HTTP {}: {body}", response.status.as_u16()));
    }
    let mut check = TrailerCheck::default();
    let mut pending = Vec::new();
    let mut storage_version = String::new();
    loop {
        let frame = tokio::time::timeout(timeout, response.body.frame())
            .await
            .map_err(|_| format!("snapshot stream from {server_name} stalled for {timeout:?}"))?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|error| format!("snapshot stream from {server_name}: {error}"))?;
        let Ok(data) = frame.into_data() else { continue };
        let mut blobs = Vec::new();
        decode_lines(&mut pending, &data, |blob, version| {
            if !version.is_empty() {
                storage_version = version;
            }
            blobs.push(blob);
        })?;
        for blob in blobs {
            check.update(&blob);
            file.write_all(&blob).await.map_err(|error| format!("write snapshot: {error}"))?;
        }
    }
    // The gateway ends every chunk with a newline; a last line without one counts too.
    let mut tail = Vec::new();
    decode_line(&pending, &mut |blob, _| tail.push(blob))?;
    for blob in tail {
        check.update(&blob);
        file.write_all(&blob).await.map_err(|error| format!("write snapshot: {error}"))?;
    }
    file.flush().await.map_err(|error| format!("write snapshot: {error}"))?;
    file.sync_all().await.map_err(|error| format!("write snapshot: {error}"))?;
    Ok(Taken { verified: check.finish()?, storage_version })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_trailer(data: &[u8]) -> Vec<u8> {
        let mut stream = data.to_vec();
        stream.extend_from_slice(&Sha256::digest(data));
        stream
    }

    #[test]
    fn a_sound_snapshot_passes_in_any_chunking() {
        let stream = with_trailer(&(0..10_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        for chunk in [1, 7, 32, 33, 4096, stream.len()] {
            let mut check = TrailerCheck::default();
            stream.chunks(chunk).for_each(|part| check.update(part));
            let verified = check.finish().expect("sound");
            assert_eq!(verified.size, stream.len() as u64);
            assert_eq!(verified.sha256, hex(&Sha256::digest(&stream)), "chunks of {chunk}");
        }
    }

    #[test]
    fn a_flipped_byte_or_a_short_stream_is_refused() {
        let mut stream = with_trailer(b"etcd database pages");
        stream[3] ^= 1;
        let mut check = TrailerCheck::default();
        check.update(&stream);
        let error = check.finish().expect_err("corrupt");
        assert!(error.contains("integrity check failed"), "{error}");

        let mut short = TrailerCheck::default();
        short.update(&[0; 31]);
        assert!(short.finish().expect_err("short").contains("too short"));
    }

    #[test]
    fn gateway_lines_decode_across_frame_boundaries() {
        let lines = concat!(
            r#"{"result":{"header":{"cluster_id":"1"},"remainingBytes":"3","blob":"YWJj","version":"3.6.0"}}"#,
            "\n",
            r#"{"result":{"blob":"ZGVm"}}"#,
            "\n"
        )
        .as_bytes();
        let mut pending = Vec::new();
        let mut blobs = Vec::new();
        let mut versions = Vec::new();
        for part in lines.chunks(10) {
            decode_lines(&mut pending, part, |blob, version| {
                blobs.extend(blob);
                versions.push(version);
            })
            .expect("decodes");
        }
        assert_eq!(blobs, b"abcdef");
        assert_eq!(versions, ["3.6.0", ""]);
        assert!(pending.is_empty());

        let error = decode_lines(
            &mut Vec::new(),
            b"{\"error\":{\"grpc_code\":14,\"message\":\"no leader\"}}\n",
            |_, _| {},
        )
        .expect_err("error line");
        assert_eq!(error, "etcd refused the snapshot: no leader");
    }
}
