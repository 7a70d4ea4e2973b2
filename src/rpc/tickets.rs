//! TicketService: convert, call the desk, convert back.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::{self, parse_enum, parse_optional_enum};
use super::gate::{authorize, open_stream, principal_label};
use super::pb::{self, ticket_service_server::TicketService};
use super::DeskCell;
use crate::auth::Caller;
use crate::desk::{Desk, NewTicket, TicketQuery};
use crate::domain::{
    Activity, ContactChannel, DeskError, Operation, Priority, Tag, TicketHeader, TicketId,
    TicketKind, TicketStatus, Visibility,
};

pub use super::streams::{expert_frames, into_stream, EventStream};

/// For a bot, the ticket's header once it is known to be one the bot
/// created (refused alike when it does not exist); `None` for others, who
/// may read every ticket.
fn bot_visible(
    desk: &Desk,
    caller: &Caller,
    id: TicketId,
) -> Result<Option<Arc<TicketHeader>>, Status> {
    if caller.principal.bot().is_none() {
        return Ok(None);
    }
    let header = match desk.get_ticket(id) {
        Ok(ticket) => Some(ticket.header),
        Err(DeskError::TicketNotFound(_)) => None,
        Err(other) => return Err(Status::from(other)),
    };
    caller.principal.may_see(header.as_deref())?;
    Ok(header)
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[derive(Clone, Debug)]
pub struct TicketApi {
    desk: DeskCell,
}

impl TicketApi {
    pub fn new(desk: DeskCell) -> Self {
        TicketApi { desk }
    }

    /// The desk, or UNAVAILABLE while the store is still being opened.
    fn desk(&self) -> Result<&Desk, Status> {
        super::ready_desk(&self.desk)
    }
}

#[tonic::async_trait]
impl TicketService for TicketApi {
    #[instrument(skip_all, fields(principal = principal_label(&request), ticket_id))]
    async fn create_ticket(
        &self,
        request: Request<pb::CreateTicketRequest>,
    ) -> Result<Response<pb::CreateTicketResponse>, Status> {
        let caller = authorize(&request, Operation::CreateTicket)?;
        let r = request.into_inner();
        let new = NewTicket {
            channel: parse_enum(
                "channel",
                r.channel,
                ContactChannel::from_number,
                Some(ContactChannel::Api),
            )?,
            kind: parse_enum(
                "kind",
                r.kind,
                TicketKind::from_number,
                Some(TicketKind::Incident),
            )?,
            priority: parse_enum(
                "priority",
                r.priority,
                Priority::from_number,
                Some(Priority::P3),
            )?,
            skills: convert::requirements("skills", &r.skills)?,
            title: r.title,
            description: r.description,
            requester: r.requester,
            request_id: non_empty(r.request_id),
            created_by: caller.principal.bot().cloned(),
        };
        let (ticket, created, suggestions) = self.desk()?.create_ticket(new).await?;
        tracing::Span::current().record("ticket_id", tracing::field::display(ticket.id()));
        Ok(Response::new(pb::CreateTicketResponse {
            ticket: Some(convert::ticket(&ticket)),
            created,
            suggestions: suggestions.iter().map(convert::hit).collect(),
        }))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request), ticket_id = %request.get_ref().id))]
    async fn get_ticket(
        &self,
        request: Request<pb::GetTicketRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        let caller = authorize(&request, Operation::GetTicket)?;
        let id = convert::ticket_id("id", &request.get_ref().id)?;
        let desk = self.desk()?;
        bot_visible(desk, &caller, id)?;
        let ticket = desk.get_ticket(id)?;
        Ok(Response::new(convert::ticket(&ticket)))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request)))]
    async fn list_tickets(
        &self,
        request: Request<pb::ListTicketsRequest>,
    ) -> Result<Response<pb::ListTicketsResponse>, Status> {
        let caller = authorize(&request, Operation::ListTickets)?;
        let r = request.into_inner();
        let query = TicketQuery {
            status: parse_optional_enum("status", r.status, TicketStatus::from_number)?,
            owner: non_empty(r.owner_id)
                .map(|o| convert::expert_id("owner_id", &o))
                .transpose()?,
            tag: non_empty(r.tag)
                .map(|t| Tag::parse("tag", &t))
                .transpose()?,
            created_by: caller.principal.bot().cloned(),
            vendor: non_empty(r.vendor),
            page_size: r.page_size as usize,
            from: non_empty(r.page_token)
                .map(|t| convert::ticket_id("page_token", &t))
                .transpose()?,
        };
        let page = self.desk()?.list_tickets(&query)?;
        Ok(Response::new(pb::ListTicketsResponse {
            tickets: page.tickets.iter().map(convert::ticket).collect(),
            next_page_token: page
                .next
                .map(|id: TicketId| id.to_string())
                .unwrap_or_default(),
        }))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request), ticket_id = %request.get_ref().ticket_id))]
    async fn post_message(
        &self,
        request: Request<pb::PostMessageRequest>,
    ) -> Result<Response<pb::TicketEvent>, Status> {
        let caller = authorize(&request, Operation::PostMessage)?;
        let r = request.into_inner();
        let id = convert::ticket_id("ticket_id", &r.ticket_id)?;
        let visibility = parse_enum("visibility", r.visibility, Visibility::from_number, None)?;
        let desk = self.desk()?;
        let header = bot_visible(desk, &caller, id)?;
        caller
            .principal
            .may_post(header.as_deref(), &r.author_id, visibility)?;
        let event = desk
            .post_message(
                id,
                &r.author_id,
                r.body,
                visibility,
                non_empty(r.request_id),
                caller.principal.bot(),
            )
            .await?;
        Ok(Response::new(convert::event(&event)))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request), ticket_id = %request.get_ref().ticket_id))]
    async fn claim_ticket(
        &self,
        request: Request<pb::ClaimTicketRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        let caller = authorize(&request, Operation::ClaimTicket)?;
        let r = request.into_inner();
        let id = convert::ticket_id("ticket_id", &r.ticket_id)?;
        let expert = convert::expert_id("expert_id", &r.expert_id)?;
        caller.principal.act_as(&expert)?;
        let ticket = self.desk()?.claim(id, &expert).await?;
        Ok(Response::new(convert::ticket(&ticket)))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request), ticket_id = %request.get_ref().ticket_id))]
    async fn transfer_ticket(
        &self,
        request: Request<pb::TransferTicketRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        let caller = authorize(&request, Operation::TransferTicket)?;
        let r = request.into_inner();
        let id = convert::ticket_id("ticket_id", &r.ticket_id)?;
        let from = convert::expert_id("from_expert_id", &r.from_expert_id)?;
        caller.principal.may_move(&from)?;
        let to = convert::expert_id("to_expert_id", &r.to_expert_id)?;
        let ticket = self.desk()?.transfer(id, &from, &to).await?;
        Ok(Response::new(convert::ticket(&ticket)))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request), ticket_id = %request.get_ref().ticket_id))]
    async fn release_ticket(
        &self,
        request: Request<pb::ReleaseTicketRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        let caller = authorize(&request, Operation::ReleaseTicket)?;
        let r = request.into_inner();
        let id = convert::ticket_id("ticket_id", &r.ticket_id)?;
        let expert = convert::expert_id("expert_id", &r.expert_id)?;
        caller.principal.may_move(&expert)?;
        let ticket = self.desk()?.release(id, &expert).await?;
        Ok(Response::new(convert::ticket(&ticket)))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request), ticket_id = %request.get_ref().ticket_id))]
    async fn join_swarm(
        &self,
        request: Request<pb::JoinSwarmRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        let caller = authorize(&request, Operation::JoinSwarm)?;
        let r = request.into_inner();
        let id = convert::ticket_id("ticket_id", &r.ticket_id)?;
        let expert = convert::expert_id("expert_id", &r.expert_id)?;
        caller.principal.act_as(&expert)?;
        let ticket = self.desk()?.join(id, &expert).await?;
        Ok(Response::new(convert::ticket(&ticket)))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request), ticket_id = %request.get_ref().ticket_id))]
    async fn leave_swarm(
        &self,
        request: Request<pb::LeaveSwarmRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        let caller = authorize(&request, Operation::LeaveSwarm)?;
        let r = request.into_inner();
        let id = convert::ticket_id("ticket_id", &r.ticket_id)?;
        let expert = convert::expert_id("expert_id", &r.expert_id)?;
        caller.principal.act_as(&expert)?;
        let ticket = self.desk()?.leave(id, &expert).await?;
        Ok(Response::new(convert::ticket(&ticket)))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request), ticket_id = %request.get_ref().ticket_id))]
    async fn request_help(
        &self,
        request: Request<pb::RequestHelpRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        let caller = authorize(&request, Operation::RequestHelp)?;
        let r = request.into_inner();
        let id = convert::ticket_id("ticket_id", &r.ticket_id)?;
        let expert = convert::expert_id("expert_id", &r.expert_id)?;
        caller.principal.act_as(&expert)?;
        let skills = convert::requirements("skills", &r.skills)?;
        let ticket = self
            .desk()?
            .request_help(id, &expert, skills, r.note)
            .await?;
        Ok(Response::new(convert::ticket(&ticket)))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request), ticket_id = %request.get_ref().ticket_id))]
    async fn update_status(
        &self,
        request: Request<pb::UpdateStatusRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        let caller = authorize(&request, Operation::UpdateStatus)?;
        let r = request.into_inner();
        let id = convert::ticket_id("ticket_id", &r.ticket_id)?;
        let expert = convert::expert_id("expert_id", &r.expert_id)?;
        caller.principal.act_as(&expert)?;
        let status = parse_enum("status", r.status, TicketStatus::from_number, None)?;
        let vendor = convert::vendor(r.vendor.as_ref());
        let knowledge = r.knowledge.map(convert::knowledge_use).transpose()?;
        let ticket = self
            .desk()?
            .update_status(id, &expert, status, r.note, vendor, knowledge)
            .await?;
        Ok(Response::new(convert::ticket(&ticket)))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request), ticket_id = %request.get_ref().ticket_id))]
    async fn rate_ticket(
        &self,
        request: Request<pb::RateTicketRequest>,
    ) -> Result<Response<pb::Ticket>, Status> {
        let caller = authorize(&request, Operation::RateTicket)?;
        let r = request.into_inner();
        let id = convert::ticket_id("ticket_id", &r.ticket_id)?;
        let desk = self.desk()?;
        bot_visible(desk, &caller, id)?;
        let actor = caller.principal.grant.to_string();
        let ticket = desk.rate(id, r.score, r.comment, &actor).await?;
        Ok(Response::new(convert::ticket(&ticket)))
    }

    type WatchTicketStream = EventStream<pb::TicketEvent>;

    #[instrument(skip_all, fields(principal = principal_label(&request), ticket_id = %request.get_ref().ticket_id))]
    async fn watch_ticket(
        &self,
        request: Request<pb::WatchTicketRequest>,
    ) -> Result<Response<Self::WatchTicketStream>, Status> {
        let caller = authorize(&request, Operation::WatchTicket)?;
        let r = request.into_inner();
        let id = convert::ticket_id("ticket_id", &r.ticket_id)?;
        let desk = self.desk()?;
        bot_visible(desk, &caller, id)?;
        let permit = open_stream(&self.desk, &caller)?;
        let subscription = desk.watch_ticket(id, r.after_seq, caller.stream_stop())?;
        Ok(Response::new(into_stream(
            subscription,
            permit,
            |d| convert::event(&d.event),
            None,
        )))
    }

    type WatchDeskStream = EventStream<pb::SwarmEvent>;

    #[instrument(skip_all, fields(principal = principal_label(&request)))]
    async fn watch_desk(
        &self,
        request: Request<pb::WatchDeskRequest>,
    ) -> Result<Response<Self::WatchDeskStream>, Status> {
        let caller = authorize(&request, Operation::WatchDesk)?;
        let r = request.into_inner();
        let desk = self.desk()?;
        let permit = open_stream(&self.desk, &caller)?;
        let subscription = desk.watch_desk(r.after_position, caller.stream_stop())?;
        Ok(Response::new(into_stream(
            subscription,
            permit,
            convert::desk_event,
            Some(expert_frames(desk)),
        )))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request), ticket_id = %request.get_ref().ticket_id))]
    async fn report_activity(
        &self,
        request: Request<pb::ReportActivityRequest>,
    ) -> Result<Response<pb::TicketActivity>, Status> {
        let caller = authorize(&request, Operation::ReportActivity)?;
        let r = request.into_inner();
        let expert = convert::expert_id("expert_id", &r.expert_id)?;
        caller.principal.act_as(&expert)?;
        let ticket = convert::ticket_id("ticket_id", &r.ticket_id)?;
        let activity = parse_enum("activity", r.activity, Activity::from_number, None)?;
        let view = self.desk()?.report_activity(&expert, ticket, activity)?;
        Ok(Response::new(convert::ticket_activity(&view)))
    }
}
