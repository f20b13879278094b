//! `BeamFnData`: the per-worker data stream, routed by instruction id.

use std::pin::Pin;
use std::sync::Arc;

use ferrobeam_proto::fn_api::beam_fn_data_server::BeamFnData;
use ferrobeam_proto::fn_api::Elements;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::registry::Registry;
use crate::worker::InboundData;

pub struct DataService {
    pub(crate) registry: Arc<Registry>,
}

/// Outbound messages buffered per worker before the sender waits: enough to
/// keep a worker fed without holding whole PCollections in the channel.
const OUTBOUND_BUFFER: usize = 16;

#[tonic::async_trait]
impl BeamFnData for DataService {
    type DataStream = Pin<Box<dyn Stream<Item = Result<Elements, Status>> + Send>>;

    async fn data(
        &self,
        request: Request<Streaming<Elements>>,
    ) -> Result<Response<Self::DataStream>, Status> {
        let worker_id = crate::worker_id(&request)?;
        let worker = self
            .registry
            .worker(&worker_id)
            .ok_or_else(|| Status::permission_denied(format!("unknown worker id {worker_id:?}")))?;
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        worker.set_data_stream(tx);
        let mut inbound = request.into_inner();
        tokio::spawn(async move {
            while let Some(msg) = inbound.next().await {
                match msg {
                    Ok(elements) => {
                        for data in elements.data {
                            worker.route_data(InboundData::Data(data));
                        }
                        for timers in elements.timers {
                            worker.route_data(InboundData::Timers(timers));
                        }
                    }
                    Err(status) => {
                        tracing::debug!(worker = %worker.id(), %status, "data stream failed");
                        break;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
