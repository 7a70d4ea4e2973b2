//! The knowledge base (tier 0, KCS): articles, their states and the moves
//! between them, and the counts of how knowledge is used.
//!
//! An article is written as a draft, published for customers and agents,
//! and archived when it no longer holds. Every change is a compare-and-swap
//! on the article's version, so two editors never overwrite each other.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::DeskError;
use super::model::{
    check_skill_list, check_text, check_title, parse_numbered_id, ExpertId, Rank, Skill, Tag,
    TicketId, UnixMicros, MAX_BODY_BYTES,
};

/// An article's id: a number growing in creation order, shown as `KB-<n>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ArticleId(pub u64);

impl ArticleId {
    pub fn parse(field: &str, raw: &str) -> Result<Self, DeskError> {
        parse_numbered_id(field, raw, "KB-", "article id").map(ArticleId)
    }
}

impl fmt::Display for ArticleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KB-{}", self.0)
    }
}

numbered_enum! {
    ArticleState {
        /// Being written; agents see it, customers do not.
        Draft = 1 => "draft",
        /// Offered to customers and agents.
        Published = 2 => "published",
        /// Kept for the record; read-only until published again.
        Archived = 3 => "archived",
    }
}

/// Most tags on one article.
pub const MAX_ARTICLE_TAGS: usize = 16;

/// An article's editable content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArticleContent {
    pub title: String,
    pub body: String,
    pub tags: Vec<Tag>,
}

impl ArticleContent {
    pub fn validate(&self) -> Result<(), DeskError> {
        check_title("title", &self.title)?;
        if self.title.chars().any(char::is_control) {
            return Err(DeskError::invalid(
                "title",
                "control characters are not allowed",
            ));
        }
        if self.body.trim().is_empty() {
            return Err(DeskError::invalid("body", "a body is required"));
        }
        check_text("body", &self.body, MAX_BODY_BYTES)?;
        if self.tags.len() > MAX_ARTICLE_TAGS {
            return Err(DeskError::invalid(
                "tags",
                format!("at most {MAX_ARTICLE_TAGS} tags, got {}", self.tags.len()),
            ));
        }
        // Same rules as a ticket's skills: no repeats, no named swarms.
        check_skill_list("tags", self.tags.iter())
    }
}

/// One stored article.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Article {
    pub id: ArticleId,
    pub content: ArticleContent,
    pub state: ArticleState,
    /// 1 when created, +1 per change; what a compare-and-swap checks.
    pub version: u64,
    /// Who wrote it first: an expert id, or the role of the token.
    pub author: String,
    pub created_at: UnixMicros,
    pub updated_at: UnixMicros,
    /// When it was last published.
    pub published_at: Option<UnixMicros>,
    /// The ticket whose resolution it was captured from.
    pub source_ticket: Option<TicketId>,
}

impl Article {
    /// A new draft.
    pub fn draft(
        id: ArticleId,
        content: ArticleContent,
        author: String,
        source_ticket: Option<TicketId>,
        now: UnixMicros,
    ) -> Result<Article, DeskError> {
        content.validate()?;
        Ok(Article {
            id,
            content,
            state: ArticleState::Draft,
            version: 1,
            author,
            created_at: now,
            updated_at: now,
            published_at: None,
            source_ticket,
        })
    }

    /// Refuses a change computed from another version than the stored one
    /// (`expected` 0: the caller does not care).
    pub fn check_version(&self, expected: u64) -> Result<(), DeskError> {
        if expected != 0 && expected != self.version {
            return Err(DeskError::ArticleVersionMismatch {
                article: self.id,
                expected,
                stored: self.version,
            });
        }
        Ok(())
    }

    fn next(&self, now: UnixMicros) -> Article {
        let mut next = self.clone();
        next.version += 1;
        next.updated_at = now;
        next
    }

    /// New content; an archived article is read-only.
    pub fn edited(&self, content: ArticleContent, now: UnixMicros) -> Result<Article, DeskError> {
        if self.state == ArticleState::Archived {
            return Err(DeskError::ArticleState {
                article: self.id,
                state: self.state,
                why: "an archived article is read-only; publish it again to edit it",
            });
        }
        content.validate()?;
        let mut next = self.next(now);
        next.content = content;
        Ok(next)
    }

    /// Published from draft or archived; `None` when it already is.
    pub fn published(&self, now: UnixMicros) -> Option<Article> {
        (self.state != ArticleState::Published).then(|| {
            let mut next = self.next(now);
            next.state = ArticleState::Published;
            next.published_at = Some(now);
            next
        })
    }

    /// Archived from draft or published; `None` when it already is.
    pub fn archived(&self, now: UnixMicros) -> Option<Article> {
        (self.state != ArticleState::Archived).then(|| {
            let mut next = self.next(now);
            next.state = ArticleState::Archived;
            next
        })
    }

    /// For what customers are offered and what a resolution may reuse.
    pub fn require_published(&self, why: &'static str) -> Result<(), DeskError> {
        if self.state != ArticleState::Published {
            return Err(DeskError::ArticleState {
                article: self.id,
                state: self.state,
                why,
            });
        }
        Ok(())
    }
}

/// Whether an expert holding `skills` may publish or archive an article
/// with `tags`: rank L2 or above on one of its tags. Knowledge customers
/// see is vouched for by someone senior in its subject; an untagged
/// article has no subject, so only admins and supervisors publish it.
pub fn may_publish(skills: &[Skill], tags: &[Tag]) -> bool {
    skills
        .iter()
        .any(|s| s.rank >= Rank::L2 && tags.contains(&s.tag))
}

numbered_enum! {
    /// How a resolution used the knowledge base.
    ArticleLink {
        /// An existing article solved it.
        Reused = 1 => "reused",
        /// A new draft was written from the resolution.
        Captured = 2 => "captured",
    }
}

/// What a resolution asks of the knowledge base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KnowledgeUse {
    Reuse(ArticleId),
    /// Content left empty is taken from the ticket: its title, the
    /// resolution note, its skill tags.
    Capture {
        title: String,
        body: String,
        tags: Option<Vec<Tag>>,
    },
}

/// Uses of knowledge that belong to no ticket, counted per hour and tag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnowledgeCounts {
    /// Articles offered to SuggestArticles.
    pub suggested: u64,
    /// Customers who said an article solved their problem.
    pub deflected: u64,
}

impl KnowledgeCounts {
    pub fn add(&mut self, other: KnowledgeCounts) {
        self.suggested += other.suggested;
        self.deflected += other.deflected;
    }

    pub fn is_empty(&self) -> bool {
        *self == KnowledgeCounts::default()
    }
}

/// The counters to add when `counts` happen to articles with `tags`:
/// one for every article (the `None` key) and one per tag.
pub fn counts_by_tag<'a>(
    uses: impl IntoIterator<Item = (&'a [Tag], KnowledgeCounts)>,
) -> BTreeMap<Option<Tag>, KnowledgeCounts> {
    let mut by_tag: BTreeMap<Option<Tag>, KnowledgeCounts> = BTreeMap::new();
    for (tags, counts) in uses {
        by_tag.entry(None).or_default().add(counts);
        for tag in tags {
            by_tag.entry(Some(tag.clone())).or_default().add(counts);
        }
    }
    by_tag
}

/// The author recorded for an article written as `expert`, or by a token
/// of `role` that acts as nobody in particular.
pub fn author_name(expert: Option<&ExpertId>, role: &str) -> String {
    expert.map_or_else(|| role.to_owned(), |e| e.as_str().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MAX_TITLE_CHARS;

    fn tag(s: &str) -> Tag {
        Tag::parse("t", s).unwrap()
    }

    fn content(title: &str) -> ArticleContent {
        ArticleContent {
            title: title.into(),
            body: "Restart the router, then sign in again.".into(),
            tags: vec![tag("network")],
        }
    }

    fn draft() -> Article {
        Article::draft(ArticleId(1), content("VPN drops"), "ann".into(), None, 10).unwrap()
    }

    #[test]
    fn ids_parse_and_print_as_kb_n() {
        assert_eq!(ArticleId::parse("id", "KB-12").unwrap(), ArticleId(12));
        assert_eq!(ArticleId(12).to_string(), "KB-12");
        for bad in ["", "KB-0", "kb-1", "KB-x", "T-1", "KB-"] {
            assert!(ArticleId::parse("id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_is_validated_field_by_field() {
        let field = |c: ArticleContent| match c.validate() {
            Err(DeskError::Invalid { field, .. }) => field,
            other => panic!("expected invalid, got {other:?}"),
        };
        assert_eq!(field(content(" ")), "title");
        assert_eq!(field(content(&"x".repeat(MAX_TITLE_CHARS + 1))), "title");
        let mut c = content("ok");
        c.body = String::new();
        assert_eq!(field(c), "body");
        let mut c = content("ok");
        c.tags = vec![tag("a"), tag("a")];
        assert_eq!(field(c), "tags");
        let mut c = content("ok");
        c.tags = vec![tag("sev1")];
        assert_eq!(field(c), "tags");
        assert!(content("ok").validate().is_ok());
    }

    #[test]
    fn states_move_draft_published_archived_and_back() {
        let a = draft();
        assert_eq!((a.state, a.version), (ArticleState::Draft, 1));
        let p = a.published(20).unwrap();
        assert_eq!(
            (p.state, p.version, p.published_at),
            (ArticleState::Published, 2, Some(20))
        );
        assert!(
            p.published(21).is_none(),
            "publishing twice changes nothing"
        );
        let x = p.archived(30).unwrap();
        assert_eq!((x.state, x.version), (ArticleState::Archived, 3));
        assert!(x.archived(31).is_none());
        assert!(matches!(
            x.edited(content("new"), 40),
            Err(DeskError::ArticleState { .. })
        ));
        let back = x.published(50).unwrap();
        assert_eq!(back.state, ArticleState::Published);
        let edited = back.edited(content("VPN drops on wifi"), 60).unwrap();
        assert_eq!(
            (edited.state, edited.version, edited.updated_at),
            (ArticleState::Published, 5, 60),
            "editing a published article keeps it published"
        );
    }

    #[test]
    fn a_stale_version_is_refused() {
        let a = draft();
        assert!(a.check_version(0).is_ok());
        assert!(a.check_version(1).is_ok());
        assert!(matches!(
            a.check_version(2),
            Err(DeskError::ArticleVersionMismatch {
                expected: 2,
                stored: 1,
                ..
            })
        ));
    }

    #[test]
    fn publishing_needs_l2_on_one_of_the_tags() {
        let skill = |t: &str, rank| Skill { tag: tag(t), rank };
        let tags = [tag("network"), tag("vpn")];
        assert!(may_publish(&[skill("vpn", Rank::L2)], &tags));
        assert!(may_publish(&[skill("network", Rank::L3)], &tags));
        assert!(!may_publish(&[skill("vpn", Rank::L1)], &tags));
        assert!(!may_publish(&[skill("billing", Rank::L3)], &tags));
        assert!(!may_publish(&[skill("vpn", Rank::L3)], &[]));
    }

    #[test]
    fn counts_go_to_every_article_and_each_tag() {
        let one = KnowledgeCounts {
            suggested: 1,
            deflected: 0,
        };
        let a = [tag("vpn")];
        let b = [tag("vpn"), tag("network")];
        let by_tag = counts_by_tag([(&a[..], one), (&b[..], one)]);
        assert_eq!(by_tag[&None].suggested, 2);
        assert_eq!(by_tag[&Some(tag("vpn"))].suggested, 2);
        assert_eq!(by_tag[&Some(tag("network"))].suggested, 1);
        assert_eq!(by_tag.len(), 3);
    }
}
