//! The bare tonic server the benchmark runs beside swarmdesk: the same
//! messages and runtime, with no routing, no storage and no filtering, so
//! that the ratio between the two shows what swarmdesk itself costs.
//! `DurableEcho` adds one durable write, so the benchmark also shows the
//! floor that acknowledging only durable writes puts under any server.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic::{Request, Response, Status};

use crate::rpc::pb::bench_baseline_server::{BenchBaseline, BenchBaselineServer};
use crate::rpc::pb::{self, CreateTicketRequest, CreateTicketResponse};
use crate::rpc::tickets::EventStream;
use crate::store::sled::{SledConfig, SledStore};
use crate::store::{BlobStore, NoSink, StoreError};

fn now() -> prost_types::Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// The ticket swarmdesk would answer with, built without any work.
fn ticket_from(r: CreateTicketRequest) -> pb::Ticket {
    pb::Ticket {
        id: "T-1".into(),
        title: r.title,
        description: r.description,
        requester: r.requester,
        channel: r.channel,
        kind: r.kind,
        priority: r.priority,
        skills: r.skills,
        status: pb::TicketStatus::Assigned as i32,
        owner_id: "baseline".into(),
        swarm_member_ids: vec![],
        created_at: Some(now()),
        updated_at: Some(now()),
        version: 1,
        // Clocks as a real answer carries them, so both answers weigh alike.
        sla: (1..=3)
            .map(|target| pb::SlaClock {
                target,
                state: pb::SlaClockState::Running as i32,
                due: Some(now()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

#[derive(Debug)]
struct Baseline {
    events: broadcast::Sender<pb::SwarmEvent>,
    /// Where `DurableEcho` writes; `None` without `--data-dir`.
    store: Option<Arc<SledStore>>,
    next_key: AtomicU64,
}

fn store_status(e: StoreError) -> Status {
    Status::internal(format!("durable echo: {e}"))
}

#[tonic::async_trait]
impl BenchBaseline for Baseline {
    async fn echo(
        &self,
        request: Request<CreateTicketRequest>,
    ) -> Result<Response<CreateTicketResponse>, Status> {
        Ok(Response::new(CreateTicketResponse {
            ticket: Some(ticket_from(request.into_inner())),
            created: true,
            suggestions: Vec::new(),
        }))
    }

    async fn durable_echo(
        &self,
        request: Request<CreateTicketRequest>,
    ) -> Result<Response<CreateTicketResponse>, Status> {
        let store = self.store.as_ref().ok_or_else(|| {
            Status::failed_precondition("durable echo: the baseline was started without --data-dir")
        })?;
        let request = request.into_inner();
        let key = format!("echo/{:020}", self.next_key.fetch_add(1, Ordering::Relaxed));
        let durable = store
            .put_blob(&key, &request.encode_to_vec())
            .map_err(store_status)?;
        durable.await.map_err(store_status)?;
        Ok(Response::new(CreateTicketResponse {
            ticket: Some(ticket_from(request)),
            created: true,
            suggestions: Vec::new(),
        }))
    }

    type ListenStream = EventStream<pb::SwarmEvent>;

    async fn listen(
        &self,
        _request: Request<pb::ListenRequest>,
    ) -> Result<Response<Self::ListenStream>, Status> {
        let stream = BroadcastStream::new(self.events.subscribe()).map(|item| {
            item.map_err(|e| Status::data_loss(format!("baseline broadcast lagged: {e}")))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn publish(
        &self,
        request: Request<CreateTicketRequest>,
    ) -> Result<Response<CreateTicketResponse>, Status> {
        let ticket = ticket_from(request.into_inner());
        let event = pb::SwarmEvent {
            position: 1,
            reason: pb::SwarmEventReason::Swarm as i32,
            event: Some(pb::TicketEvent {
                position: 1,
                ticket_id: ticket.id.clone(),
                ticket_seq: 1,
                at: Some(now()),
                r#type: pb::TicketEventType::Created as i32,
                actor_id: ticket.requester.clone(),
                ticket: Some(ticket.clone()),
                payload: None,
            }),
            ..Default::default()
        };
        // No receivers is fine: nothing is listening yet.
        let _ = self.events.send(event);
        Ok(Response::new(CreateTicketResponse {
            ticket: Some(ticket),
            created: true,
            suggestions: Vec::new(),
        }))
    }
}

/// Serves the baseline until the process ends; `DurableEcho` writes to a
/// store on `data_dir` when one is given.
pub async fn serve(
    listener: TcpListener,
    buffer: usize,
    data_dir: Option<&Path>,
) -> Result<(), Box<dyn std::error::Error>> {
    let (events, _) = broadcast::channel(buffer.max(16));
    let store = match data_dir {
        Some(dir) => Some(Arc::new(SledStore::open(
            &SledConfig::new(dir),
            Arc::new(NoSink),
        )?)),
        None => None,
    };
    let baseline = Baseline {
        events,
        store,
        next_key: AtomicU64::new(0),
    };
    Server::builder()
        .tcp_nodelay(true)
        .add_service(BenchBaselineServer::new(baseline))
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::pb::bench_baseline_client::BenchBaselineClient;

    async fn started(
        data_dir: Option<&Path>,
    ) -> (
        BenchBaselineClient<tonic::transport::Channel>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let dir = data_dir.map(Path::to_path_buf);
        let server = tokio::spawn(async move {
            serve(listener, 16, dir.as_deref()).await.unwrap();
        });
        let client = BenchBaselineClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        (client, server)
    }

    fn request(title: &str) -> CreateTicketRequest {
        CreateTicketRequest {
            title: title.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn durable_echo_answers_after_the_request_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let (mut client, server) = started(Some(dir.path())).await;
        for title in ["first", "second"] {
            let answer = client.durable_echo(request(title)).await.unwrap();
            assert_eq!(answer.into_inner().ticket.unwrap().title, title);
        }
        drop(client);
        server.abort();
        let _ = server.await;
        // Once its connection has ended the server lets go of its store (and
        // sled's lock on it); what it acknowledged is there.
        let mut tries = 0;
        let store = loop {
            match SledStore::open(&SledConfig::new(dir.path()), Arc::new(NoSink)) {
                Ok(store) => break store,
                Err(e) if tries > 3000 => panic!("the store stayed locked for 30 s: {e}"),
                Err(_) => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
            }
        };
        for (n, title) in ["first", "second"].iter().enumerate() {
            let stored = store.blob(&format!("echo/{n:020}")).unwrap().unwrap();
            let stored = CreateTicketRequest::decode(stored.as_slice()).unwrap();
            assert_eq!(stored.title, *title);
        }
        assert_eq!(store.blob(&format!("echo/{:020}", 2)).unwrap(), None);
    }

    #[tokio::test]
    async fn durable_echo_without_a_data_dir_is_refused() {
        let (mut client, server) = started(None).await;
        let status = client.durable_echo(request("x")).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().contains("--data-dir"), "{status:?}");
        let echoed = client.echo(request("x")).await.unwrap();
        assert_eq!(echoed.into_inner().ticket.unwrap().title, "x");
        server.abort();
    }
}
