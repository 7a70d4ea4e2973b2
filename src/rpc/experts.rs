//! ExpertService: convert, call the desk, convert back.

use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::{self, parse_enum};
use super::gate::{authorize, open_stream, principal_label};
use super::pb::{self, expert_service_server::ExpertService};
use super::streams::{activity_frames, into_stream, EventStream};
use super::DeskCell;
use crate::desk::{Desk, ExpertProfile};
use crate::domain::{DeskError, Operation, Presence};

#[derive(Clone, Debug)]
pub struct ExpertApi {
    desk: DeskCell,
}

impl ExpertApi {
    pub fn new(desk: DeskCell) -> Self {
        ExpertApi { desk }
    }

    /// The desk, or UNAVAILABLE while the store is still being opened.
    fn desk(&self) -> Result<&Desk, Status> {
        super::ready_desk(&self.desk)
    }
}

#[tonic::async_trait]
impl ExpertService for ExpertApi {
    #[instrument(skip_all, fields(principal = principal_label(&request)))]
    async fn register_expert(
        &self,
        request: Request<pb::RegisterExpertRequest>,
    ) -> Result<Response<pb::Expert>, Status> {
        authorize(&request, Operation::RegisterExpert)?;
        let e = request
            .into_inner()
            .expert
            .ok_or_else(|| Status::from(DeskError::invalid("expert", "an expert is required")))?;
        let profile = ExpertProfile {
            id: convert::expert_id("expert.id", &e.id)?,
            skills: convert::skills("expert.skills", &e.skills)?,
            display_name: e.display_name,
            capacity: e.capacity,
        };
        let view = self.desk()?.register_expert(profile).await?;
        Ok(Response::new(convert::expert(&view)))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request), expert_id = %request.get_ref().id))]
    async fn get_expert(
        &self,
        request: Request<pb::GetExpertRequest>,
    ) -> Result<Response<pb::Expert>, Status> {
        authorize(&request, Operation::GetExpert)?;
        let id = convert::expert_id("id", &request.get_ref().id)?;
        let view = self.desk()?.get_expert(&id)?;
        Ok(Response::new(convert::expert(&view)))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request)))]
    async fn list_experts(
        &self,
        request: Request<pb::ListExpertsRequest>,
    ) -> Result<Response<pb::ListExpertsResponse>, Status> {
        authorize(&request, Operation::ListExperts)?;
        let r = request.into_inner();
        let from = if r.page_token.is_empty() {
            None
        } else {
            Some(convert::expert_id("page_token", &r.page_token)?)
        };
        let (experts, next) = self
            .desk()?
            .list_experts(from.as_ref(), r.page_size as usize);
        Ok(Response::new(pb::ListExpertsResponse {
            experts: experts.iter().map(convert::expert).collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    type SubscribeStream = EventStream<pb::SwarmEvent>;

    #[instrument(skip_all, fields(principal = principal_label(&request), expert_id = %request.get_ref().expert_id))]
    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = authorize(&request, Operation::Subscribe)?;
        let r = request.into_inner();
        let id = convert::expert_id("expert_id", &r.expert_id)?;
        caller.principal.act_as(&id)?;
        let channels = convert::tags("channels", &r.channels)?;
        let desk = self.desk()?;
        let permit = open_stream(&self.desk, &caller)?;
        let stream = desk
            .subscribe(&id, channels, r.after_position, caller.stream_stop())
            .await?;
        let activity = activity_frames(desk.activity_feed(&id));
        Ok(Response::new(into_stream(
            stream,
            permit,
            convert::swarm_event,
            Some(activity),
        )))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request), expert_id = %request.get_ref().expert_id))]
    async fn set_presence(
        &self,
        request: Request<pb::SetPresenceRequest>,
    ) -> Result<Response<pb::Expert>, Status> {
        let caller = authorize(&request, Operation::SetPresence)?;
        let r = request.into_inner();
        let id = convert::expert_id("expert_id", &r.expert_id)?;
        caller.principal.act_as(&id)?;
        let presence = parse_enum("presence", r.presence, Presence::from_number, None)?;
        let view = self.desk()?.set_presence(&id, presence).await?;
        Ok(Response::new(convert::expert(&view)))
    }
}
