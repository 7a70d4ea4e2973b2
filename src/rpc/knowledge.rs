//! KnowledgeService: convert, ask the knowledge base, convert back.

use tonic::{Request, Response, Status};
use tracing::instrument;

use super::gate::{authorize, principal_label};
use super::pb::{self, knowledge_service_server::KnowledgeService};
use super::{convert, DeskCell};
use crate::domain::knowledge::author_name;
use crate::domain::{ArticleContent, ArticleId, ArticleState, DeskError, Grant, Operation};
use crate::knowledge::{ArticleEdit, ArticleSearch, KnowledgeBase};

#[derive(Clone, Debug)]
pub struct KnowledgeApi {
    desk: DeskCell,
}

impl KnowledgeApi {
    pub fn new(desk: DeskCell) -> Self {
        KnowledgeApi { desk }
    }

    fn knowledge(&self) -> Result<&KnowledgeBase, Status> {
        Ok(&super::ready(&self.desk)?.knowledge)
    }

    /// PublishArticle and ArchiveArticle: the same rights, the same shape.
    async fn move_article<T>(
        &self,
        request: &Request<T>,
        id: &str,
        expected_version: u64,
        to: ArticleState,
    ) -> Result<Response<pb::Article>, Status> {
        let caller = authorize(request, Operation::PublishArticle)?;
        let id = article_id(id)?;
        let grant = &caller.principal.grant;
        reply(
            self.knowledge()?
                .change_state(id, expected_version, grant, to)
                .await,
        )
    }
}

fn article_id(raw: &str) -> Result<ArticleId, Status> {
    ArticleId::parse("id", raw).map_err(Status::from)
}

fn reply(
    article: Result<crate::domain::Article, DeskError>,
) -> Result<Response<pb::Article>, Status> {
    article
        .map(|a| Response::new(convert::article(&a)))
        .map_err(Status::from)
}

#[tonic::async_trait]
impl KnowledgeService for KnowledgeApi {
    #[instrument(skip_all, fields(principal = principal_label(&request)))]
    async fn create_article(
        &self,
        request: Request<pb::CreateArticleRequest>,
    ) -> Result<Response<pb::Article>, Status> {
        let caller = authorize(&request, Operation::EditArticle)?;
        let r = request.into_inner();
        let content = ArticleContent {
            title: r.title,
            body: r.body,
            tags: convert::tags("tags", &r.tags)?,
        };
        let grant = &caller.principal.grant;
        let expert = match grant {
            Grant::Expert(e) => Some(e),
            _ => None,
        };
        let author = author_name(expert, grant.role().label());
        reply(self.knowledge()?.create(content, author, None).await)
    }

    #[instrument(skip_all, fields(principal = principal_label(&request), article_id = %request.get_ref().id))]
    async fn update_article(
        &self,
        request: Request<pb::UpdateArticleRequest>,
    ) -> Result<Response<pb::Article>, Status> {
        authorize(&request, Operation::EditArticle)?;
        let r = request.into_inner();
        let id = article_id(&r.id)?;
        let edit = ArticleEdit {
            title: r.title,
            body: r.body,
            tags: r.tags.map(|t| convert::tags("tags", &t.tags)).transpose()?,
        };
        reply(self.knowledge()?.update(id, edit, r.expected_version).await)
    }

    #[instrument(skip_all, fields(principal = principal_label(&request), article_id = %request.get_ref().id))]
    async fn get_article(
        &self,
        request: Request<pb::GetArticleRequest>,
    ) -> Result<Response<pb::Article>, Status> {
        let caller = authorize(&request, Operation::ReadArticle)?;
        let id = article_id(&request.get_ref().id)?;
        reply(self.knowledge()?.get_for(id, &caller.principal.grant))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request), article_id = %request.get_ref().id))]
    async fn publish_article(
        &self,
        request: Request<pb::PublishArticleRequest>,
    ) -> Result<Response<pb::Article>, Status> {
        let (id, version) = (
            request.get_ref().id.clone(),
            request.get_ref().expected_version,
        );
        self.move_article(&request, &id, version, ArticleState::Published)
            .await
    }

    #[instrument(skip_all, fields(principal = principal_label(&request), article_id = %request.get_ref().id))]
    async fn archive_article(
        &self,
        request: Request<pb::ArchiveArticleRequest>,
    ) -> Result<Response<pb::Article>, Status> {
        let (id, version) = (
            request.get_ref().id.clone(),
            request.get_ref().expected_version,
        );
        self.move_article(&request, &id, version, ArticleState::Archived)
            .await
    }

    #[instrument(skip_all, fields(principal = principal_label(&request)))]
    async fn search_articles(
        &self,
        request: Request<pb::SearchArticlesRequest>,
    ) -> Result<Response<pb::SearchArticlesResponse>, Status> {
        authorize(&request, Operation::SearchArticles)?;
        let r = request.into_inner();
        let search = ArticleSearch {
            tags: convert::tags("tags", &r.tags)?,
            states: r
                .states
                .iter()
                .map(|s| convert::article_state("states", *s))
                .collect::<Result<_, _>>()?,
            limit: r.limit as usize,
            text: r.query,
        };
        let hits = self.knowledge()?.search(search).await?;
        Ok(Response::new(pb::SearchArticlesResponse {
            hits: hits.iter().map(convert::hit).collect(),
        }))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request)))]
    async fn suggest_articles(
        &self,
        request: Request<pb::SuggestArticlesRequest>,
    ) -> Result<Response<pb::SuggestArticlesResponse>, Status> {
        authorize(&request, Operation::SuggestArticles)?;
        let r = request.into_inner();
        let tags = convert::tags("tags", &r.tags)?;
        let hits = self
            .knowledge()?
            .suggest(r.text, tags, r.limit as usize)
            .await?;
        Ok(Response::new(pb::SuggestArticlesResponse {
            suggestions: hits.iter().map(convert::hit).collect(),
        }))
    }

    #[instrument(skip_all, fields(principal = principal_label(&request), article_id = %request.get_ref().article_id))]
    async fn record_deflection(
        &self,
        request: Request<pb::RecordDeflectionRequest>,
    ) -> Result<Response<pb::RecordDeflectionResponse>, Status> {
        let caller = authorize(&request, Operation::RecordDeflection)?;
        let r = request.get_ref();
        let id = ArticleId::parse("article_id", &r.article_id)?;
        let request_id = (!r.request_id.is_empty()).then_some(r.request_id.as_str());
        let recorded = self
            .knowledge()?
            .deflect(id, caller.principal.bot(), request_id)
            .await?;
        Ok(Response::new(pb::RecordDeflectionResponse { recorded }))
    }
}
