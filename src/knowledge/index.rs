//! The full-text index of articles (tantivy), derived from the store.
//!
//! The store is the truth; the index is rebuilt from it whenever it is
//! missing, unreadable or stale. Freshness is one number: every article
//! write raises the store's knowledge generation, and each index commit
//! records the generation it covers in its payload. An index whose payload
//! differs from the store's generation at start-up (a crash between the
//! store write and the index commit, a restored backup, an index from
//! another build) is rebuilt.
//!
//! Ranking is BM25 over title (weighted double) and body, both analysed
//! the same way (lower case, ASCII folding, English stop words and
//! stemming). Queries are built from the words of the text, never parsed
//! as query syntax: a customer's "can't log in -- urgent!!" is words, not
//! operators.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tantivy::collector::{Count, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, Occur, Query, TermQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, INDEXED, STORED,
    STRING,
};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use crate::domain::{Article, ArticleId, ArticleState, Tag};

/// Changes whenever the schema or the analysis changes, so that an index
/// built by another build is rebuilt rather than misread.
const INDEX_FORMAT: u32 = 1;
const ANALYZER: &str = "swarmdesk_en";
/// tantivy's smallest indexing arena is 15 MB; articles are small and
/// written one at a time, so the smallest will do.
const WRITER_MEMORY_BYTES: usize = 20_000_000;
/// Most distinct words of a text that make up its query: the first ones
/// of a long description carry its subject.
const MAX_QUERY_TERMS: usize = 64;
const TITLE_BOOST: f32 = 2.0;
const SNIPPET_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("search index directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("search index holds an unreadable document: {0}")]
    Corrupt(String),
    #[error("search index is closed")]
    Closed,
}

#[derive(Clone, Copy, Debug)]
struct Fields {
    id: Field,
    title: Field,
    body: Field,
    tag: Field,
    state: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = TextOptions::default().set_stored().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        id: builder.add_u64_field("id", INDEXED | STORED),
        title: builder.add_text_field("title", text.clone()),
        body: builder.add_text_field("body", text),
        tag: builder.add_text_field("tag", STRING | STORED),
        state: builder.add_text_field("state", STRING | STORED),
    };
    (builder.build(), fields)
}

fn analyzer() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter);
    match StopWordFilter::new(Language::English) {
        Some(stop) => builder
            .filter(stop)
            .filter(Stemmer::new(Language::English))
            .build(),
        None => builder.filter(Stemmer::new(Language::English)).build(),
    }
}

fn payload(generation: u64) -> String {
    format!("swarmdesk-articles/{INDEX_FORMAT}/{generation}")
}

/// One search result.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub id: ArticleId,
    pub title: String,
    pub tags: Vec<Tag>,
    pub state: ArticleState,
    pub score: f32,
    pub snippet: String,
}

/// What to look for.
#[derive(Clone, Copy, Debug)]
pub struct SearchQuery<'a> {
    pub text: &'a str,
    /// Articles with any of these; empty: any.
    pub tags: &'a [Tag],
    /// Articles in any of these; never empty.
    pub states: &'a [ArticleState],
    pub limit: usize,
}

pub struct ArticleIndex {
    index: Index,
    reader: IndexReader,
    /// `None` once closed.
    writer: Mutex<Option<IndexWriter>>,
    fields: Fields,
    /// Published articles in the index: lets ticket creation skip the
    /// search while there is nothing to suggest.
    published: AtomicU64,
    dir: Option<PathBuf>,
}

impl std::fmt::Debug for ArticleIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArticleIndex")
            .field("dir", &self.dir)
            .field("published", &self.published.load(Ordering::Relaxed))
            .finish()
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Opens the index in `dir` if it is one of this schema; otherwise empties
/// `dir` and creates a new one there.
fn open_or_create(dir: &Path, schema: &Schema) -> Result<Index, IndexError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    match Index::open_in_dir(dir) {
        Ok(index) if index.schema() == *schema => return Ok(index),
        Ok(_) => {
            tracing::warn!(dir = %dir.display(), "search index has another schema; rebuilding it")
        }
        Err(e) if dir.join("meta.json").exists() => {
            tracing::warn!(dir = %dir.display(), error = %e, "search index unreadable; rebuilding it");
        }
        Err(_) => {}
    }
    std::fs::remove_dir_all(dir).map_err(io_error(dir))?;
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    Ok(Index::create_in_dir(dir, schema.clone())?)
}

impl ArticleIndex {
    /// Opens the index in `dir` (`None`: in memory) and makes it cover
    /// `generation`, rebuilding it from `articles` when it does not.
    /// `articles` is only called for a rebuild.
    pub fn open<F>(dir: Option<&Path>, generation: u64, articles: F) -> Result<Self, IndexError>
    where
        F: FnOnce() -> Result<Vec<Article>, IndexError>,
    {
        let (schema, fields) = schema();
        let index = match dir {
            Some(dir) => open_or_create(dir, &schema)?,
            None => Index::create_in_ram(schema),
        };
        index.tokenizers().register(ANALYZER, analyzer());
        let writer = index.writer_with_num_threads(1, WRITER_MEMORY_BYTES)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let this = ArticleIndex {
            index,
            reader,
            writer: Mutex::new(Some(writer)),
            fields,
            published: AtomicU64::new(0),
            dir: dir.map(Path::to_path_buf),
        };
        let found = this.index.load_metas()?.payload;
        if found.as_deref() == Some(payload(generation).as_str()) {
            this.count_published()?;
            tracing::info!(
                generation,
                published = this.published_count(),
                "search index is current"
            );
        } else {
            let articles = articles()?;
            tracing::info!(found = ?found, generation, articles = articles.len(), "rebuilding the search index from the store");
            this.rebuild(&articles, generation)?;
        }
        Ok(this)
    }

    fn writer(&self) -> MutexGuard<'_, Option<IndexWriter>> {
        // A panic mid-write leaves uncommitted documents at worst; the
        // next commit's payload or a rebuild sets things right.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets background merges finish and releases the index's lock; later
    /// writes fail with [`IndexError::Closed`].
    pub fn close(&self) -> Result<(), IndexError> {
        match self.writer().take() {
            Some(writer) => Ok(writer.wait_merging_threads()?),
            None => Ok(()),
        }
    }

    fn document(&self, article: &Article) -> TantivyDocument {
        let f = &self.fields;
        let mut doc = TantivyDocument::default();
        doc.add_u64(f.id, article.id.0);
        doc.add_text(f.title, &article.content.title);
        doc.add_text(f.body, &article.content.body);
        for tag in &article.content.tags {
            doc.add_text(f.tag, tag.as_str());
        }
        doc.add_text(f.state, article.state.label());
        doc
    }

    fn commit(&self, writer: &mut IndexWriter, generation: u64) -> Result<(), IndexError> {
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&payload(generation));
        prepared.commit()?;
        self.reader.reload()?;
        self.count_published()
    }

    fn count_published(&self) -> Result<(), IndexError> {
        let term = Term::from_field_text(self.fields.state, ArticleState::Published.label());
        let query = TermQuery::new(term, IndexRecordOption::Basic);
        let n = self.reader.searcher().search(&query, &Count)?;
        self.published.store(n as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Puts `article` in place of its earlier version; the index then
    /// covers `generation`.
    pub fn put(&self, article: &Article, generation: u64) -> Result<(), IndexError> {
        let mut guard = self.writer();
        let writer = guard.as_mut().ok_or(IndexError::Closed)?;
        writer.delete_term(Term::from_field_u64(self.fields.id, article.id.0));
        writer.add_document(self.document(article))?;
        self.commit(writer, generation)
    }

    /// Replaces everything with `articles`, which make `generation`.
    pub fn rebuild(&self, articles: &[Article], generation: u64) -> Result<(), IndexError> {
        let mut guard = self.writer();
        let writer = guard.as_mut().ok_or(IndexError::Closed)?;
        writer.delete_all_documents()?;
        for article in articles {
            writer.add_document(self.document(article))?;
        }
        self.commit(writer, generation)
    }

    /// The generation the index covers, as its last commit says.
    pub fn generation(&self) -> Option<u64> {
        let found = self.index.load_metas().ok()?.payload?;
        let zero = payload(0);
        let prefix = zero.strip_suffix('0')?;
        found.strip_prefix(prefix)?.parse().ok()
    }

    pub fn published_count(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// The distinct analysed words of `text`, in order, at most
    /// [`MAX_QUERY_TERMS`].
    fn words(&self, text: &str) -> Result<Vec<String>, IndexError> {
        let mut analyzer = self.index.tokenizer_for_field(self.fields.body)?;
        let mut stream = analyzer.token_stream(text);
        let mut seen = BTreeSet::new();
        let mut words = Vec::new();
        while stream.advance() && words.len() < MAX_QUERY_TERMS {
            let word = &stream.token().text;
            if seen.insert(word.clone()) {
                words.push(word.clone());
            }
        }
        Ok(words)
    }

    /// Articles matching `query`, best first. An empty text matches every
    /// article the filters let through (then all score the same); a text
    /// of stop words alone matches none.
    pub fn search(&self, query: &SearchQuery<'_>) -> Result<Vec<Hit>, IndexError> {
        let f = self.fields;
        let words = self.words(query.text)?;
        if words.is_empty() && !query.text.trim().is_empty() {
            return Ok(Vec::new());
        }
        let text: Box<dyn Query> = if words.is_empty() {
            Box::new(AllQuery)
        } else {
            let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            for word in &words {
                let title = TermQuery::new(
                    Term::from_field_text(f.title, word),
                    IndexRecordOption::WithFreqs,
                );
                let body = TermQuery::new(
                    Term::from_field_text(f.body, word),
                    IndexRecordOption::WithFreqs,
                );
                clauses.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(title), TITLE_BOOST)),
                ));
                clauses.push((Occur::Should, Box::new(body)));
            }
            Box::new(BooleanQuery::new(clauses))
        };
        let any_of = |field: Field, values: Vec<&str>| -> Box<dyn Query> {
            let terms = values
                .into_iter()
                .map(|v| Term::from_field_text(field, v))
                .collect();
            // A filter: it decides what matches, not how well.
            Box::new(ConstScoreQuery::new(
                Box::new(BooleanQuery::new_multiterms_query(terms)),
                0.0,
            ))
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, text)];
        clauses.push((
            Occur::Must,
            any_of(f.state, query.states.iter().map(|s| s.label()).collect()),
        ));
        if !query.tags.is_empty() {
            clauses.push((
                Occur::Must,
                any_of(f.tag, query.tags.iter().map(Tag::as_str).collect()),
            ));
        }
        let full = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let top = searcher.search(
            &full,
            &TopDocs::with_limit(query.limit.max(1)).order_by_score(),
        )?;
        let mut snippets = SnippetGenerator::create(&searcher, &full, f.body)?;
        snippets.set_max_num_chars(SNIPPET_CHARS);
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            let text = |field: Field| {
                doc.get_first(field)
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            let id = doc
                .get_first(f.id)
                .and_then(|v| v.as_u64())
                .ok_or_else(|| IndexError::Corrupt("a document without an id".into()))?;
            let state = text(f.state);
            let state = state
                .parse::<ArticleState>()
                .map_err(|e| IndexError::Corrupt(format!("article KB-{id}: state {e}")))?;
            let tags = doc
                .get_all(f.tag)
                .filter_map(|v| v.as_str())
                .map(|t| Tag::parse("tag", t))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| IndexError::Corrupt(format!("article KB-{id}: {e}")))?;
            let mut snippet = snippets.snippet_from_doc(&doc).fragment().to_owned();
            if snippet.is_empty() {
                snippet = text(f.body).chars().take(SNIPPET_CHARS).collect();
            }
            hits.push(Hit {
                id: ArticleId(id),
                title: text(f.title),
                tags,
                state,
                score,
                snippet,
            });
        }
        Ok(hits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ArticleContent;

    fn article(id: u64, title: &str, body: &str, tags: &[&str], state: ArticleState) -> Article {
        let mut a = Article::draft(
            ArticleId(id),
            ArticleContent {
                title: title.into(),
                body: body.into(),
                tags: tags.iter().map(|t| Tag::parse("t", t).unwrap()).collect(),
            },
            "ann".into(),
            None,
            1,
        )
        .unwrap();
        a.state = state;
        a
    }

    fn corpus() -> Vec<Article> {
        use ArticleState::*;
        vec![
            article(1, "Printer shows paper jam", "Open tray two and remove the jammed sheet.", &["hardware"], Published),
            article(2, "VPN disconnects every few minutes", "The VPN client drops the tunnel when the laptop sleeps. Turn off power saving for the network adapter, then reconnect the VPN.", &["network", "vpn"], Published),
            article(3, "Resetting your password", "Use the self-service portal to reset a forgotten password.", &["accounts"], Published),
            article(4, "VPN certificate renewal", "Draft notes on renewing VPN certificates.", &["vpn"], Draft),
            article(5, "Old VPN client", "The old VPN client is retired.", &["vpn"], Archived),
        ]
    }

    fn query<'a>(text: &'a str, states: &'a [ArticleState]) -> SearchQuery<'a> {
        SearchQuery {
            text,
            tags: &[],
            states,
            limit: 10,
        }
    }

    const PUBLISHED: &[ArticleState] = &[ArticleState::Published];

    #[test]
    fn the_clearly_matching_article_ranks_first() {
        let index = ArticleIndex::open(None, 5, || Ok(corpus())).unwrap();
        let hits = index
            .search(&query(
                "my vpn keeps disconnecting when my laptop goes to sleep",
                PUBLISHED,
            ))
            .unwrap();
        assert_eq!(hits[0].id, ArticleId(2), "{hits:?}");
        assert!(hits.iter().all(|h| h.state == ArticleState::Published));
        assert!(
            hits[0].snippet.to_lowercase().contains("vpn"),
            "{}",
            hits[0].snippet
        );
        let hits = index.search(&query("forgot password", PUBLISHED)).unwrap();
        assert_eq!(
            hits.iter().map(|h| h.id).collect::<Vec<_>>(),
            [ArticleId(3)]
        );
        assert_eq!(index.published_count(), 3);
    }

    #[test]
    fn states_and_tags_filter_without_changing_the_order() {
        let index = ArticleIndex::open(None, 5, || Ok(corpus())).unwrap();
        let all = [
            ArticleState::Draft,
            ArticleState::Published,
            ArticleState::Archived,
        ];
        let ids = |q: SearchQuery<'_>| {
            let mut ids: Vec<u64> = index.search(&q).unwrap().iter().map(|h| h.id.0).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(query("vpn", &all)), [2, 4, 5]);
        assert_eq!(ids(query("vpn", PUBLISHED)), [2]);
        assert_eq!(ids(query("vpn", &[ArticleState::Draft])), [4]);
        let hardware = [Tag::parse("t", "hardware").unwrap()];
        let by_tag = SearchQuery {
            tags: &hardware,
            ..query("", PUBLISHED)
        };
        assert_eq!(
            ids(by_tag),
            [1],
            "an empty text lists what the filters allow"
        );
        assert!(index
            .search(&query("the and of", PUBLISHED))
            .unwrap()
            .is_empty());
        // Query syntax is just words.
        assert_eq!(ids(query("title:vpn -sleep AND (", PUBLISHED)), [2]);
    }

    #[test]
    fn put_replaces_and_the_payload_tracks_the_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        let mut rebuilt = 0;
        {
            let index = ArticleIndex::open(Some(&path), 5, || {
                rebuilt += 1;
                Ok(corpus())
            })
            .unwrap();
            assert_eq!(index.generation(), Some(5));
            let mut a = corpus().remove(0);
            a.content.title = "Scanner shows paper jam".into();
            a.state = ArticleState::Archived;
            index.put(&a, 6).unwrap();
            assert_eq!(index.generation(), Some(6));
            assert!(index
                .search(&query("printer", PUBLISHED))
                .unwrap()
                .is_empty());
            assert_eq!(index.published_count(), 2);
        }
        // Current: opened as it is.
        let index = ArticleIndex::open(Some(&path), 6, || panic!("no rebuild")).unwrap();
        assert_eq!(index.published_count(), 2);
        drop(index);
        // Stale (the store moved on without it): rebuilt.
        let index = ArticleIndex::open(Some(&path), 7, || {
            rebuilt += 1;
            Ok(corpus())
        })
        .unwrap();
        assert_eq!((rebuilt, index.generation()), (2, Some(7)));
        assert_eq!(index.published_count(), 3);
        drop(index);
        // Garbage where the index was: rebuilt.
        std::fs::write(path.join("meta.json"), b"not json").unwrap();
        let index = ArticleIndex::open(Some(&path), 7, || Ok(corpus())).unwrap();
        assert_eq!(
            index.search(&query("printer jam", PUBLISHED)).unwrap()[0].id,
            ArticleId(1)
        );
    }
}
