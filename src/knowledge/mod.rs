//! The knowledge base service: articles kept in the store, searched through
//! an index derived from it ([`index`]), and the counts of how knowledge
//! is used that belong to no ticket (suggestions, deflections).
//!
//! Article writes are serialised (they are rare and human-paced), so the
//! index is committed in the order of the store's generations; each write
//! is durable before the index is touched, and answered after the index
//! holds it, so a search right after an edit finds the edit.

pub mod index;

use std::path::Path;
use std::sync::Arc;

use crate::domain::knowledge::{counts_by_tag, may_publish};
use crate::domain::stats::HOUR_MICROS;
use crate::domain::{
    Article, ArticleContent, ArticleId, ArticleState, BotName, DeskError, Grant, KnowledgeCounts,
    Tag, TicketId, UnixMicros,
};
use crate::store::{Change, ExpertStore, KnowledgeStore, Log, Storage};
use crate::timers::Clock;
use index::{ArticleIndex, Hit, IndexError, SearchQuery};

/// Most suggestions CreateTicket answers with.
pub const TICKET_SUGGESTIONS: usize = 3;
pub const DEFAULT_SUGGESTIONS: usize = 3;
pub const MAX_SUGGESTIONS: usize = 10;
pub const DEFAULT_SEARCH_LIMIT: usize = 10;
pub const MAX_SEARCH_LIMIT: usize = 50;
/// Longest SearchArticles query, in characters.
pub const MAX_QUERY_CHARS: usize = 1000;

impl From<IndexError> for DeskError {
    fn from(e: IndexError) -> Self {
        DeskError::Storage(e.to_string())
    }
}

/// Changes to an article's content; `None` keeps what it has.
#[derive(Clone, Debug, Default)]
pub struct ArticleEdit {
    pub title: Option<String>,
    pub body: Option<String>,
    pub tags: Option<Vec<Tag>>,
}

/// A search as SearchArticles asks for it, already parsed.
#[derive(Clone, Debug)]
pub struct ArticleSearch {
    pub text: String,
    pub tags: Vec<Tag>,
    /// Empty: published only.
    pub states: Vec<ArticleState>,
    /// 0: the default.
    pub limit: usize,
}

pub struct KnowledgeBase {
    log: Arc<dyn Log>,
    articles: Arc<dyn KnowledgeStore>,
    experts: Arc<dyn ExpertStore>,
    index: Arc<ArticleIndex>,
    /// Held across a write's store commit and index commit.
    writes: tokio::sync::Mutex<()>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for KnowledgeBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KnowledgeBase")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

fn hour_of(at: UnixMicros) -> UnixMicros {
    at.div_euclid(HOUR_MICROS) * HOUR_MICROS
}

/// Runs blocking index work off the async workers.
async fn blocking<T, F>(work: F) -> Result<T, DeskError>
where
    F: FnOnce() -> Result<T, DeskError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| DeskError::Storage(format!("search task failed: {e}")))?
}

impl KnowledgeBase {
    /// Opens the index in `index_dir` (`None`: in memory), rebuilding it
    /// from the store when it is missing or stale. Blocking.
    pub fn open(
        storage: &Storage,
        index_dir: Option<&Path>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DeskError> {
        let articles = storage.knowledge.clone();
        let generation = articles.knowledge_generation()?;
        let index = ArticleIndex::open(index_dir, generation, || {
            articles
                .articles()
                .map_err(|e| IndexError::Corrupt(e.to_string()))
        })?;
        Ok(KnowledgeBase {
            log: storage.log.clone(),
            articles,
            experts: storage.experts.clone(),
            index: Arc::new(index),
            writes: tokio::sync::Mutex::new(()),
            clock,
        })
    }

    fn now(&self) -> UnixMicros {
        self.clock.now_micros()
    }

    /// Stores `article` durably, then puts it in the index; the caller
    /// holds `writes`.
    async fn save(&self, article: Article) -> Result<Article, DeskError> {
        let appended = self.log.append(Change::Article(article.clone()))?;
        let generation = appended.generation;
        self.log.wait_durable(appended.lsn).await?;
        let (index, store, copy) = (self.index.clone(), self.articles.clone(), article.clone());
        let indexed = blocking(move || {
            if let Err(e) = index.put(&copy, generation) {
                // The article is stored; the index must not fall behind.
                tracing::warn!(error = %e, article = %copy.id, "search index update failed; rebuilding it");
                index.rebuild(&store.articles()?, generation)?;
            }
            Ok(())
        })
        .await;
        if let Err(e) = indexed {
            // Searches miss this write until the index is rebuilt (at the
            // latest on the next start, as its generation is behind).
            tracing::error!(error = %e, article = %article.id, "search index is behind the store");
        }
        Ok(article)
    }

    /// Puts an article another node wrote (applied from the log) in the
    /// index; a failure rebuilds it. Blocking.
    pub fn applied(&self, article: &Article) {
        let generation = match self.articles.knowledge_generation() {
            Ok(g) => g,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the knowledge generation");
                return;
            }
        };
        if let Err(e) = self.index.put(article, generation) {
            tracing::warn!(error = %e, article = %article.id, "search index update failed; rebuilding it");
            self.refresh();
        }
    }

    /// Rebuilds the index from the state unless it is current. Blocking.
    pub fn refresh(&self) {
        let rebuilt = self.articles.knowledge_generation().and_then(|generation| {
            if self.index.generation() == Some(generation) {
                return Ok(());
            }
            let articles = self.articles.articles()?;
            self.index
                .rebuild(&articles, generation)
                .map_err(|e| crate::store::StoreError::Backend(e.to_string()))
        });
        if let Err(e) = rebuilt {
            tracing::error!(error = %e, "search index is behind the store");
        }
    }

    /// Finishes the index's background work (at shutdown). Blocking.
    pub fn close(&self) {
        if let Err(e) = self.index.close() {
            tracing::warn!(error = %e, "closing the search index failed; it is rebuilt if stale");
        }
    }

    pub fn get(&self, id: ArticleId) -> Result<Article, DeskError> {
        self.articles
            .article(id)?
            .ok_or(DeskError::ArticleNotFound(id))
    }

    /// Reads an article for `grant`: bots read published ones only (the
    /// refusal reads the same whether or not a draft exists).
    pub fn get_for(&self, id: ArticleId, grant: &Grant) -> Result<Article, DeskError> {
        let article = self.articles.article(id)?;
        if matches!(grant, Grant::Bot(_))
            && article
                .as_ref()
                .is_none_or(|a| a.state != ArticleState::Published)
        {
            return Err(DeskError::ArticleNotFound(id));
        }
        article.ok_or(DeskError::ArticleNotFound(id))
    }

    /// A new draft.
    pub async fn create(
        &self,
        content: ArticleContent,
        author: String,
        source_ticket: Option<TicketId>,
    ) -> Result<Article, DeskError> {
        content.validate()?;
        let _writes = self.writes.lock().await;
        let id = self.log.allocate_article_id()?;
        let article = Article::draft(id, content, author, source_ticket, self.now())?;
        self.save(article).await
    }

    pub async fn update(
        &self,
        id: ArticleId,
        edit: ArticleEdit,
        expected_version: u64,
    ) -> Result<Article, DeskError> {
        let _writes = self.writes.lock().await;
        let article = self.get(id)?;
        article.check_version(expected_version)?;
        let content = ArticleContent {
            title: edit.title.unwrap_or_else(|| article.content.title.clone()),
            body: edit.body.unwrap_or_else(|| article.content.body.clone()),
            tags: edit.tags.unwrap_or_else(|| article.content.tags.clone()),
        };
        let next = article.edited(content, self.now())?;
        self.save(next).await
    }

    /// Admins and supervisors may publish or archive any article; experts
    /// those they rank L2 or above in.
    fn check_publisher(&self, grant: &Grant, article: &Article) -> Result<(), DeskError> {
        match grant {
            Grant::Admin | Grant::Supervisor => Ok(()),
            Grant::Expert(id) => {
                let expert = self
                    .experts
                    .expert(id)?
                    .ok_or_else(|| DeskError::ExpertNotFound(id.clone()))?;
                if may_publish(&expert.skills, &article.content.tags) {
                    Ok(())
                } else {
                    let tags: Vec<&str> = article.content.tags.iter().map(Tag::as_str).collect();
                    Err(DeskError::PermissionDenied(format!(
                        "publishing or archiving {} takes rank l2 or above in one of its tags ({}); {id} holds none",
                        article.id,
                        if tags.is_empty() { "it has none".to_owned() } else { tags.join(", ") }
                    )))
                }
            }
            Grant::Bot(_) => Err(DeskError::PermissionDenied(
                "bots do not publish or archive articles".into(),
            )),
        }
    }

    /// Publishes (from draft or archived) or archives (from draft or
    /// published) an article; moving it where it already is changes
    /// nothing. Drafts are made by [`KnowledgeBase::create`] only.
    pub async fn change_state(
        &self,
        id: ArticleId,
        expected_version: u64,
        grant: &Grant,
        to: ArticleState,
    ) -> Result<Article, DeskError> {
        let _writes = self.writes.lock().await;
        let article = self.get(id)?;
        self.check_publisher(grant, &article)?;
        article.check_version(expected_version)?;
        let now = self.now();
        let next = match to {
            ArticleState::Published => article.published(now),
            ArticleState::Archived => article.archived(now),
            ArticleState::Draft => None,
        };
        match next {
            Some(next) => self.save(next).await,
            None => Ok(article),
        }
    }

    async fn run_search(
        &self,
        text: String,
        tags: Vec<Tag>,
        states: Vec<ArticleState>,
        limit: usize,
    ) -> Result<Vec<Hit>, DeskError> {
        let index = self.index.clone();
        blocking(move || {
            Ok(index.search(&SearchQuery {
                text: &text,
                tags: &tags,
                states: &states,
                limit,
            })?)
        })
        .await
    }

    /// SearchArticles (for agents: in whichever states they ask for).
    pub async fn search(&self, search: ArticleSearch) -> Result<Vec<Hit>, DeskError> {
        let chars = search.text.chars().count();
        if chars > MAX_QUERY_CHARS {
            return Err(DeskError::invalid(
                "query",
                format!("{chars} characters is over the limit of {MAX_QUERY_CHARS}"),
            ));
        }
        let mut states = search.states;
        if states.is_empty() {
            states = vec![ArticleState::Published];
        }
        let limit = match search.limit {
            0 => DEFAULT_SEARCH_LIMIT,
            n => n.min(MAX_SEARCH_LIMIT),
        };
        self.run_search(search.text, search.tags, states, limit)
            .await
    }

    /// SuggestArticles: published articles for a customer's words, each
    /// offered one counted (durably, before the answer).
    pub async fn suggest(
        &self,
        text: String,
        tags: Vec<Tag>,
        limit: usize,
    ) -> Result<Vec<Hit>, DeskError> {
        crate::domain::check_text("text", &text, crate::domain::MAX_BODY_BYTES)?;
        let limit = match limit {
            0 => DEFAULT_SUGGESTIONS,
            n => n.min(MAX_SUGGESTIONS),
        };
        if text.trim().is_empty() {
            return Err(DeskError::invalid(
                "text",
                "the customer's words are required",
            ));
        }
        let hits = self
            .run_search(text, tags, vec![ArticleState::Published], limit)
            .await?;
        if !hits.is_empty() {
            let one = KnowledgeCounts {
                suggested: 1,
                ..KnowledgeCounts::default()
            };
            let counts = counts_by_tag(hits.iter().map(|h| (h.tags.as_slice(), one)));
            let appended = self.log.append(Change::KnowledgeCounts {
                hour: hour_of(self.now()),
                counts,
                once: None,
            })?;
            self.log.wait_durable(appended.lsn).await?;
        }
        Ok(hits)
    }

    /// Up to [`TICKET_SUGGESTIONS`] published articles for a new ticket.
    /// Best effort: a failing search costs the customer suggestions, never
    /// their ticket.
    pub async fn suggest_for_ticket(&self, title: &str, description: &str) -> Vec<Hit> {
        if self.index.published_count() == 0 {
            return Vec::new();
        }
        let text = format!("{title}\n{description}");
        match self
            .run_search(
                text,
                Vec::new(),
                vec![ArticleState::Published],
                TICKET_SUGGESTIONS,
            )
            .await
        {
            Ok(hits) => hits,
            Err(e) => {
                tracing::warn!(error = %e, "no suggestions for a new ticket: search failed");
                Vec::new()
            }
        }
    }

    /// RecordDeflection: a customer said `id` (published) solved their
    /// problem. With `request_id`, counted once per bot and id; false
    /// when it was counted before.
    pub async fn deflect(
        &self,
        id: ArticleId,
        bot: Option<&BotName>,
        request_id: Option<&str>,
    ) -> Result<bool, DeskError> {
        if let Some(r) = request_id {
            crate::domain::check_short_text("request_id", r)?;
        }
        let article = self.get(id)?;
        article
            .require_published("only a published article can have solved a customer's problem")?;
        let once = request_id.map(|r| match bot {
            Some(bot) => format!("deflect@{bot}:{r}"),
            None => format!("deflect:{r}"),
        });
        let one = KnowledgeCounts {
            deflected: 1,
            ..KnowledgeCounts::default()
        };
        let counts = counts_by_tag([(article.content.tags.as_slice(), one)]);
        let appended = self.log.append(Change::KnowledgeCounts {
            hour: hour_of(self.now()),
            counts,
            once,
        })?;
        if appended.recorded {
            self.log.wait_durable(appended.lsn).await?;
        }
        Ok(appended.recorded)
    }

    /// Suggestions (through SuggestArticles) and deflections in the hours
    /// starting in `[from, to)`.
    pub fn counts(
        &self,
        from: UnixMicros,
        to: UnixMicros,
        tag: Option<&Tag>,
    ) -> Result<KnowledgeCounts, DeskError> {
        Ok(self.articles.knowledge_counts(from, to, tag)?)
    }
}
