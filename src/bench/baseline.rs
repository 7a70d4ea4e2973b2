//! The bare tonic server the benchmark runs beside swarmdesk: the same
//! messages and runtime, with no routing, no storage and no filtering, so
//! that the ratio between the two shows what swarmdesk itself costs.

use std::time::{SystemTime, UNIX_EPOCH};

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
            encoded_event: None,
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

/// Serves the baseline until the process ends.
pub async fn serve(listener: TcpListener, buffer: usize) -> Result<(), tonic::transport::Error> {
    let (events, _) = broadcast::channel(buffer.max(16));
    Server::builder()
        .tcp_nodelay(true)
        .add_service(BenchBaselineServer::new(Baseline { events }))
        .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)))
        .await
}
