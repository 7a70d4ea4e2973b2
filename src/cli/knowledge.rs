//! `swarmdesk article`: the knowledge base from the command line.

use clap::Subcommand;

use super::output::Printer;
use super::CliError;
use crate::client::AuthedChannel;
use crate::domain::ArticleState;
use crate::rpc::pb;
use crate::rpc::pb::knowledge_service_client::KnowledgeServiceClient;

#[derive(Subcommand, Clone, Debug)]
pub enum ArticleCommand {
    /// Write a new draft.
    Create {
        #[arg(long)]
        title: String,
        #[arg(long)]
        body: String,
        /// Skill tag, repeatable.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Change an article; what is not given stays.
    Update {
        id: String,
        #[arg(long)]
        title: Option<String>,
        #[arg(long)]
        body: Option<String>,
        /// Replaces every tag (repeatable).
        #[arg(long = "tag")]
        tags: Option<Vec<String>>,
        /// Refuse unless the article is still at this version.
        #[arg(long, default_value_t = 0)]
        expected_version: u64,
    },
    /// Show one article.
    Show { id: String },
    /// Offer it to customers and agents.
    Publish {
        id: String,
        #[arg(long, default_value_t = 0)]
        expected_version: u64,
    },
    /// Withdraw it (kept, read-only).
    Archive {
        id: String,
        #[arg(long, default_value_t = 0)]
        expected_version: u64,
    },
    /// Full-text search, best first.
    Search {
        query: String,
        /// Only articles with one of these tags (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// draft, published or archived (repeatable); default published.
        #[arg(long = "state")]
        states: Vec<ArticleState>,
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// What a bot would offer a customer for these words (counted).
    Suggest {
        text: String,
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Record that an article solved a customer's problem without a ticket.
    Deflect {
        id: String,
        #[arg(long, default_value = "")]
        request_id: String,
    },
}

pub(super) async fn run(
    channel: AuthedChannel,
    out: Printer,
    action: ArticleCommand,
) -> Result<(), CliError> {
    let mut kb = KnowledgeServiceClient::new(channel);
    let article = match action {
        ArticleCommand::Create { title, body, tags } => {
            kb.create_article(pb::CreateArticleRequest { title, body, tags })
                .await?
        }
        ArticleCommand::Update {
            id,
            title,
            body,
            tags,
            expected_version,
        } => {
            let request = pb::UpdateArticleRequest {
                id,
                title,
                body,
                tags: tags.map(|tags| pb::TagList { tags }),
                expected_version,
            };
            kb.update_article(request).await?
        }
        ArticleCommand::Show { id } => kb.get_article(pb::GetArticleRequest { id }).await?,
        ArticleCommand::Publish {
            id,
            expected_version,
        } => {
            kb.publish_article(pb::PublishArticleRequest {
                id,
                expected_version,
            })
            .await?
        }
        ArticleCommand::Archive {
            id,
            expected_version,
        } => {
            kb.archive_article(pb::ArchiveArticleRequest {
                id,
                expected_version,
            })
            .await?
        }
        ArticleCommand::Search {
            query,
            tags,
            states,
            limit,
        } => {
            let request = pb::SearchArticlesRequest {
                query,
                tags,
                states: states.into_iter().map(ArticleState::number).collect(),
                limit,
            };
            let reply = kb.search_articles(request).await?.into_inner();
            reply.hits.iter().for_each(|h| out.hit(h));
            return Ok(());
        }
        ArticleCommand::Suggest { text, tags, limit } => {
            let request = pb::SuggestArticlesRequest { text, tags, limit };
            let reply = kb.suggest_articles(request).await?.into_inner();
            reply.suggestions.iter().for_each(|h| out.hit(h));
            return Ok(());
        }
        ArticleCommand::Deflect { id, request_id } => {
            let request = pb::RecordDeflectionRequest {
                article_id: id.clone(),
                request_id,
            };
            let recorded = kb.record_deflection(request).await?.into_inner().recorded;
            out.deflection(&id, recorded);
            return Ok(());
        }
    };
    out.article(&article.into_inner());
    Ok(())
}
