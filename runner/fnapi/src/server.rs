//! The one gRPC server every SDK worker of this process dials into.

use std::net::SocketAddr;
use std::sync::Arc;

use ferrobeam_proto::fn_api::beam_fn_control_server::BeamFnControlServer;
use ferrobeam_proto::fn_api::beam_fn_data_server::BeamFnDataServer;
use ferrobeam_proto::fn_api::beam_fn_logging_server::BeamFnLoggingServer;
use ferrobeam_proto::fn_api::beam_fn_state_server::BeamFnStateServer;
use ferrobeam_proto::fn_api::provision_service_server::ProvisionServiceServer;
use ferrobeam_proto::pipeline::v1::ApiServiceDescriptor;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;

use crate::control::ControlService;
use crate::data::DataService;
use crate::logging::LoggingService;
use crate::provision::ProvisionServer;
use crate::registry::Registry;
use crate::state::StateService;
use crate::state_socket::StateSocket;

/// Largest message a worker may send us.  Data-plane batches from the SDKs
/// are a few MiB; anything far larger is a bug or an attack.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;

/// How an [`FnServer`] guards its port.
#[derive(Clone, Debug)]
pub struct FnServerOptions {
    /// If set, every call (control, data, state, logging, provision and
    /// whatever `extra` mounts) must carry `authorization: Bearer <token>`.
    pub auth_token: Option<ferrobeam_auth::AuthToken>,
    /// Largest message a worker may send (gRPC; the state socket keeps
    /// [`MAX_MESSAGE_BYTES`]).
    pub max_message_bytes: usize,
}

impl Default for FnServerOptions {
    fn default() -> Self {
        Self {
            auth_token: None,
            max_message_bytes: MAX_MESSAGE_BYTES,
        }
    }
}

/// How often the Fn API pings a worker's connection, and how long it waits
/// for the answer before giving the worker up.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// A running Fn API server.
pub struct FnServer {
    pub registry: Arc<Registry>,
    addr: SocketAddr,
    /// The faster state channel for workers we start (see [`StateSocket`]).
    state_socket: Option<StateSocket>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FnServer {
    /// Serves control, data, state, logging and provision on `listener`;
    /// `extra` may mount more services (e.g. artifact retrieval) on the same port.
    pub fn start(
        listener: TcpListener,
        extra: impl FnOnce(tonic::service::Routes) -> tonic::service::Routes,
    ) -> std::io::Result<Self> {
        Self::start_with(listener, FnServerOptions::default(), extra)
    }

    /// [`FnServer::start`] with a token and a message limit.
    pub fn start_with(
        listener: TcpListener,
        options: FnServerOptions,
        extra: impl FnOnce(tonic::service::Routes) -> tonic::service::Routes,
    ) -> std::io::Result<Self> {
        let max_message_bytes = options.max_message_bytes;
        let addr = listener.local_addr()?;
        let registry = Registry::new();
        let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let r = registry.clone();
        let routes = tonic::service::Routes::new(
            BeamFnControlServer::new(ControlService {
                registry: r.clone(),
            })
            .max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            BeamFnDataServer::new(DataService {
                registry: r.clone(),
            })
            .max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            BeamFnStateServer::new(StateService {
                registry: r.clone(),
            })
            .max_decoding_message_size(max_message_bytes),
        )
        .add_service(
            BeamFnLoggingServer::new(LoggingService {
                registry: r.clone(),
            })
            .max_decoding_message_size(max_message_bytes),
        )
        .add_service(ProvisionServiceServer::new(ProvisionServer { registry: r }));
        let routes = extra(routes);
        // tonic ignores its own `tcp_nodelay` for a caller's listener: set it
        // on every connection, or Nagle's algorithm holds back the second of
        // two small messages (a state response right after another) until
        // the first is acknowledged.
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            if let Ok(stream) = &conn {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(error = %e, "could not set TCP_NODELAY");
                }
            }
            conn
        });
        tokio::spawn(async move {
            let result = tonic::transport::Server::builder()
                // A worker whose host vanished (power, network) sends no
                // FIN or RST: its streams would hang, and its bundles with
                // them.  Pings find it within 30 s and close its streams,
                // which retries the bundles elsewhere like any lost worker.
                .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
                .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
                // One check for every service on the port (see `ferrobeam_auth`).
                .layer(ferrobeam_auth::GrpcAuthLayer::new(options.auth_token))
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = shutdown_rx.await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "Fn API server failed");
            }
        });
        tracing::info!(%addr, "Fn API server listening");
        // Optional: without it, every worker uses the gRPC state service.
        let state_socket = StateSocket::bind(registry.clone())
            .map_err(|e| tracing::warn!(error = %e, "no state socket; workers use gRPC state"))
            .ok();
        Ok(Self {
            registry,
            addr,
            state_socket,
            shutdown: Some(shutdown),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The state socket's path, if it could be bound.
    pub fn state_socket(&self) -> Option<&std::path::Path> {
        self.state_socket.as_ref().map(StateSocket::path)
    }

    /// The descriptor workers are told to dial.
    pub fn descriptor(&self) -> ApiServiceDescriptor {
        ApiServiceDescriptor {
            url: self.addr.to_string(),
            ..Default::default()
        }
    }
}

impl Drop for FnServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
