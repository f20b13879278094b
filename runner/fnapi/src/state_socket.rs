//! A faster state channel for the Python workers ferrobeam starts itself.
//!
//! In the stock Python harness every State API request is a hand-off between
//! three threads (the caller, gRPC's request sender, the response reader),
//! and a stateful DoFn waits for one request per key read and one per key
//! written.  Measured on a stateful count, those hand-offs were most of the
//! job's CPU time.  Workers we launch therefore also get this Unix-domain
//! socket: the same `StateRequest` / `StateResponse` protos, each framed by a
//! little-endian `u32` length, written and read by the calling thread itself
//! (`ferrobeam/_state_channel.py`).  Answers come back in request order, so
//! the worker may send its writes without waiting and collect their answers
//! later, before its bundle completes.
//!
//! The socket lives in a fresh directory only this user can enter; it is
//! not reachable from the network.  Every other worker (LOOPBACK, external,
//! other languages) uses the gRPC state service, which answers the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ferrobeam_proto::fn_api::StateRequest;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use crate::registry::Registry;
use crate::server::MAX_MESSAGE_BYTES;
use crate::state::answer;

/// Buffer size of each side of a connection: big enough for a bundle's
/// burst of pipelined writes and their acknowledgements.
const IO_BUFFER: usize = 64 << 10;

/// A listening state socket; dropping it stops serving and removes it.
pub struct StateSocket {
    path: PathBuf,
    accept: JoinHandle<()>,
    // Removed (with the socket in it) on drop.
    _dir: tempfile::TempDir,
}

impl StateSocket {
    /// Binds a socket in a new private temporary directory and serves the
    /// bundles of `registry` on it.  Must be called inside a tokio runtime.
    pub fn bind(registry: Arc<Registry>) -> std::io::Result<Self> {
        // Short prefix: a socket path must fit in `sun_path` (108 bytes).
        let dir = tempfile::Builder::new().prefix("fb-").tempdir()?;
        // The socket takes no auth token (see `ferrobeam_auth`): only this
        // user may enter its directory, and so connect to it.  Set before
        // the socket exists.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        }
        let path = dir.path().join("state.sock");
        let listener = UnixListener::bind(&path)?;
        let accept = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let registry = registry.clone();
                        tokio::spawn(async move {
                            if let Err(e) = serve_connection(stream, &registry).await {
                                tracing::debug!(error = %e, "state socket connection ended");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "state socket accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        });
        tracing::debug!(path = %path.display(), "state socket listening");
        Ok(Self {
            path,
            accept,
            _dir: dir,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StateSocket {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Answers one worker thread's requests, in order, until it hangs up.
async fn serve_connection(stream: UnixStream, registry: &Registry) -> std::io::Result<()> {
    let (read, write) = stream.into_split();
    let mut read = BufReader::with_capacity(IO_BUFFER, read);
    let mut write = BufWriter::with_capacity(IO_BUFFER, write);
    let mut frame = Vec::new();
    loop {
        let len = match read.read_u32_le().await {
            Ok(len) => len as usize,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        if len > MAX_MESSAGE_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("state request of {len} bytes is over the {MAX_MESSAGE_BYTES}-byte limit"),
            ));
        }
        frame.resize(len, 0);
        read.read_exact(&mut frame).await?;
        let request = StateRequest::decode(frame.as_slice())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        let response = answer(registry, request).encode_to_vec();
        write.write_u32_le(response.len() as u32).await?;
        write.write_all(&response).await?;
        // Pipelined requests are answered in one write; the answer the
        // worker waits for goes out as soon as nothing else is queued.
        if read.buffer().is_empty() {
            write.flush().await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrobeam_proto::fn_api::{state_request, StateClearRequest, StateResponse};

    async fn roundtrip(stream: &mut UnixStream, request: &StateRequest) -> StateResponse {
        let body = request.encode_to_vec();
        stream.write_u32_le(body.len() as u32).await.unwrap();
        stream.write_all(&body).await.unwrap();
        let len = stream.read_u32_le().await.unwrap() as usize;
        let mut buf = vec![0; len];
        stream.read_exact(&mut buf).await.unwrap();
        StateResponse::decode(buf.as_slice()).unwrap()
    }

    #[tokio::test]
    async fn answers_in_order_and_names_unknown_bundles() {
        let socket = StateSocket::bind(Registry::new()).unwrap();
        let mut stream = UnixStream::connect(socket.path()).await.unwrap();
        for id in ["1", "2"] {
            let request = StateRequest {
                id: id.into(),
                instruction_id: "no-such-bundle".into(),
                request: Some(state_request::Request::Clear(StateClearRequest {})),
                ..Default::default()
            };
            let response = roundtrip(&mut stream, &request).await;
            assert_eq!(response.id, id);
            assert!(
                response.error.contains("no-such-bundle"),
                "{}",
                response.error
            );
        }
    }

    #[tokio::test]
    async fn oversized_frames_close_the_connection() {
        let socket = StateSocket::bind(Registry::new()).unwrap();
        let mut stream = UnixStream::connect(socket.path()).await.unwrap();
        stream
            .write_u32_le((MAX_MESSAGE_BYTES + 1) as u32)
            .await
            .unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(stream.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn the_socket_is_removed_on_drop() {
        let socket = StateSocket::bind(Registry::new()).unwrap();
        let path = socket.path().to_owned();
        assert!(path.exists());
        drop(socket);
        assert!(!path.exists());
    }

    /// It takes no token, so nobody but this user may reach it.
    #[cfg(unix)]
    #[tokio::test]
    async fn only_this_user_may_enter_the_socket_directory() {
        use std::os::unix::fs::PermissionsExt;
        let socket = StateSocket::bind(Registry::new()).unwrap();
        let dir = socket.path().parent().unwrap();
        let mode = std::fs::metadata(dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
}
