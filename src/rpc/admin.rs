//! AdminService: the online backup, token management (admins only) and
//! the cluster's status (admins and supervisors).

use std::io::{BufWriter, Read, Seek, SeekFrom};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::{self, parse_enum};
use super::gate::{authorize, principal_label};
use super::pb::{self, admin_service_server::AdminService};
use super::tickets::EventStream;
use super::{ready, DeskCell};
use crate::backup::BackupWriter;
use crate::domain::{Grant, Operation, Role, TokenId};

/// Bytes per streamed chunk.
const CHUNK: usize = 64 * 1024;

#[derive(Clone, Debug)]
pub struct AdminApi {
    desk: DeskCell,
}

impl AdminApi {
    pub fn new(desk: DeskCell) -> Self {
        AdminApi { desk }
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    type BackupStream = EventStream<pb::BackupChunk>;

    #[instrument(skip_all, fields(principal = principal_label(&request)))]
    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        authorize(&request, Operation::Backup)?;
        let store = ready(&self.desk)?.snapshot.clone();
        // Snapshot to a private temporary file first: the store is paused
        // only as long as the local copy takes, not as long as the client
        // takes to read it.
        let file = tokio::task::spawn_blocking(move || -> Result<std::fs::File, String> {
            let mut file = tempfile::tempfile().map_err(|e| e.to_string())?;
            let mut writer =
                BackupWriter::new(BufWriter::new(&mut file)).map_err(|e| e.to_string())?;
            let pairs = store
                .export(&mut |k, v| writer.pair(k, v))
                .map_err(|e| e.to_string())?;
            writer.finish().map_err(|e| e.to_string())?;
            tracing::info!(pairs, "backup snapshot taken");
            file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
            Ok(file)
        })
        .await
        .map_err(|e| Status::internal(format!("backup task: {e}")))?
        .map_err(|e| {
            tracing::error!(error = %e, "backup failed");
            Status::internal("backup failed")
        })?;
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut file = file;
            loop {
                let mut data = vec![0u8; CHUNK];
                match file.read(&mut data) {
                    Ok(0) => return,
                    Ok(n) => {
                        data.truncate(n);
                        if tx.blocking_send(Ok(pb::BackupChunk { data })).is_err() {
                            return; // the client went away
                        }
                    }
                    Err(e) => {
                        let _ =
                            tx.blocking_send(Err(Status::internal(format!("backup read: {e}"))));
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request)))]
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        authorize(&request, Operation::ManageTokens)?;
        let r = request.into_inner();
        let served = ready(&self.desk)?;
        let role = parse_enum("role", r.role, Role::from_number, None)?;
        let grant = Grant::new(role, &r.expert_id, &r.bot_name)?;
        if let Grant::Expert(expert) = &grant {
            // A token for a mistyped expert would fail every call it makes.
            served.desk.get_expert(expert)?;
        }
        let (record, secret) = served.tokens.create(&r.label, grant).await?;
        Ok(Response::new(pb::CreateTokenResponse {
            token: Some(convert::token(&record)),
            secret,
        }))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request)))]
    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        authorize(&request, Operation::ManageTokens)?;
        let include_revoked = request.get_ref().include_revoked;
        let tokens = ready(&self.desk)?
            .tokens
            .list()
            .iter()
            .filter(|t| include_revoked || t.revoked_at.is_none())
            .map(convert::token)
            .collect();
        Ok(Response::new(pb::ListTokensResponse { tokens }))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request)))]
    async fn cluster_status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        authorize(&request, Operation::ClusterStatus)?;
        let cluster = ready(&self.desk)?.cluster.clone().ok_or_else(|| {
            Status::failed_precondition("this server runs as a single node (no --cluster)")
        })?;
        let status = cluster
            .status()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(convert::cluster_status(&status)))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request), token_id = %request.get_ref().id))]
    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        authorize(&request, Operation::ManageTokens)?;
        let id = TokenId::parse("id", &request.get_ref().id)?;
        let record = ready(&self.desk)?.tokens.revoke(&id).await?;
        Ok(Response::new(convert::token(&record)))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request)))]
    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::Token>, Status> {
        let caller = authorize(&request, Operation::WhoAmI)?;
        let principal = &caller.principal;
        let record = ready(&self.desk)?
            .tokens
            .list()
            .into_iter()
            .find(|t| t.id == principal.token_id);
        let token = match record {
            Some(record) => convert::token(&record),
            // --auth off: no stored token stands behind the caller.
            None => pb::Token {
                label: principal.label.clone(),
                role: principal.grant.role().number(),
                ..Default::default()
            },
        };
        Ok(Response::new(token))
    }
}
