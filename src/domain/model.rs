//! The nouns of swarmdesk: identifiers, ranks, experts and tickets, with the
//! validation that makes each one well formed.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::{quote, DeskError};
use super::sla::SlaClocks;

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Longest description or message body, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Most skills on an expert or a ticket, and most channels on a stream.
pub const MAX_SKILLS: usize = 16;
/// Most channels one Subscribe may name.
pub const MAX_CHANNELS: usize = 64;
/// Capacity given to an expert registered with capacity 0.
pub const DEFAULT_CAPACITY: u32 = 5;
/// Largest capacity an expert may have.
pub const MAX_CAPACITY: u32 = 1000;
/// Longest requester, display name, note or request id, in characters.
pub const MAX_SHORT_TEXT_CHARS: usize = 256;
/// Longest note on a status change or help request, in bytes.
pub const MAX_NOTE_BYTES: usize = 8 * 1024;

/// Microseconds since the Unix epoch.
pub type UnixMicros = i64;

/// A skill tag, which is also the name of a skill channel:
/// `[a-z0-9][a-z0-9._-]{0,63}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tag(String);

impl Tag {
    pub fn parse(field: &str, raw: &str) -> Result<Self, DeskError> {
        let bytes = raw.as_bytes();
        let first_ok = bytes
            .first()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes.iter().skip(1).all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
        if first_ok && rest_ok && bytes.len() <= 64 {
            Ok(Tag(raw.to_owned()))
        } else {
            Err(DeskError::invalid(
                field,
                format!(
                    "tag {} does not match [a-z0-9][a-z0-9._-]{{0,63}}",
                    quote(raw)
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An expert's id: `[A-Za-z0-9][A-Za-z0-9._@-]{0,127}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ExpertId(String);

impl ExpertId {
    pub fn parse(field: &str, raw: &str) -> Result<Self, DeskError> {
        let bytes = raw.as_bytes();
        let first_ok = bytes.first().is_some_and(|b| b.is_ascii_alphanumeric());
        let rest_ok = bytes
            .iter()
            .skip(1)
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
        if raw.is_empty() {
            Err(DeskError::invalid(field, "an expert id is required"))
        } else if first_ok && rest_ok && bytes.len() <= 128 {
            Ok(ExpertId(raw.to_owned()))
        } else {
            Err(DeskError::invalid(
                field,
                format!(
                    "expert id {} does not match [A-Za-z0-9][A-Za-z0-9._@-]{{0,127}}",
                    quote(raw)
                ),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ExpertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A ticket's id: a number growing in creation order, shown as `T-<n>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TicketId(pub u64);

impl TicketId {
    pub fn parse(field: &str, raw: &str) -> Result<Self, DeskError> {
        parse_numbered_id(field, raw, "T-", "ticket id").map(TicketId)
    }
}

/// The number of an id written `<prefix><n>` (n ≥ 1), such as `T-12`.
pub fn parse_numbered_id(
    field: &str,
    raw: &str,
    prefix: &str,
    what: &str,
) -> Result<u64, DeskError> {
    if raw.is_empty() {
        return Err(DeskError::invalid(field, format!("a {what} is required")));
    }
    raw.strip_prefix(prefix)
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            DeskError::invalid(
                field,
                format!("{what} {} is not of the form {prefix}<n>", quote(raw)),
            )
        })
}

impl fmt::Display for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "T-{}", self.0)
    }
}

/// Declares a closed enum with a stable wire number for each variant, and
/// `from_number` that refuses anything else.
macro_rules! numbered_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $n:literal => $label:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name { $($(#[$vmeta])* $variant = $n),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn from_number(n: i32) -> Option<Self> {
                match n { $($n => Some($name::$variant),)+ _ => None }
            }

            pub fn number(self) -> i32 {
                self as i32
            }

            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $label),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.label())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let lower = s.to_ascii_lowercase();
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.label() == lower)
                    .ok_or_else(|| {
                        let all: Vec<&str> = $name::ALL.iter().map(|v| v.label()).collect();
                        format!("{} is not one of {}", $crate::domain::error::quote(s), all.join(", "))
                    })
            }
        }
    };
}

numbered_enum! {
    /// How deep an expert's command of a skill goes; `L3 > L2 > L1`.
    Rank { L1 = 1 => "l1", L2 = 2 => "l2", L3 = 3 => "l3" }
}

numbered_enum! {
    /// What an expert reports doing on a ticket (collision detection);
    /// `Idle`: they left it.
    Activity { Viewing = 1 => "viewing", Typing = 2 => "typing", Idle = 3 => "idle" }
}

numbered_enum! {
    /// `P1` is critical and sorts first.
    Priority { P1 = 1 => "p1", P2 = 2 => "p2", P3 = 3 => "p3", P4 = 4 => "p4" }
}

numbered_enum! {
    TicketStatus {
        /// No owner yet.
        Open = 1 => "open",
        Assigned = 2 => "assigned",
        WaitingCustomer = 3 => "waiting-customer",
        WaitingVendor = 4 => "waiting-vendor",
        Resolved = 5 => "resolved",
        Closed = 6 => "closed",
    }
}

impl TicketStatus {
    /// Owned work still in progress: what counts against an owner's capacity.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            TicketStatus::Assigned | TicketStatus::WaitingCustomer | TicketStatus::WaitingVendor
        )
    }
}

numbered_enum! {
    TicketKind {
        Incident = 1 => "incident",
        ServiceRequest = 2 => "service-request",
        ChangeRequest = 3 => "change-request",
        Question = 4 => "question",
    }
}

numbered_enum! {
    /// Where the customer came from (not to be confused with a skill channel).
    ContactChannel {
        Chat = 1 => "chat",
        Email = 2 => "email",
        Phone = 3 => "phone",
        Portal = 4 => "portal",
        Social = 5 => "social",
        Api = 6 => "api",
    }
}

numbered_enum! {
    Visibility {
        /// The customer sees it.
        Public = 1 => "public",
        /// The swarm only.
        Internal = 2 => "internal",
    }
}

numbered_enum! {
    Presence {
        Available = 1 => "available",
        /// Keeps streams and tickets; gets no automatic assignment.
        Away = 2 => "away",
    }
}

numbered_enum! {
    /// Why an event is on an expert's stream.
    SwarmReason {
        Swarm = 1 => "swarm",
        Offer = 2 => "offer",
        Assigned = 3 => "assigned",
        Update = 4 => "update",
        HelpRequested = 5 => "help-requested",
        /// Seen only because the ticket reached one of the viewer's named
        /// swarms (sev1, triage, backlog).
        Escalated = 6 => "escalated",
    }
}

numbered_enum! {
    /// Channels besides skill tags, which tickets reach by priority or by a
    /// breached service level rather than by skill.
    NamedSwarm {
        /// Every P1 ticket, from its creation.
        Sev1 = 1 => "sev1",
        /// Tickets whose time to own or to first response is breached.
        Triage = 2 => "triage",
        /// Tickets whose time to resolve is breached.
        Backlog = 3 => "backlog",
    }
}

impl NamedSwarm {
    pub fn tag(self) -> Tag {
        Tag(self.label().to_owned())
    }

    pub fn of(tag: &Tag) -> Option<NamedSwarm> {
        tag.as_str().parse().ok()
    }
}

/// The outside party a ticket waits on (tier 4), with their reference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VendorRef {
    pub name: String,
    pub reference: String,
}

/// A requester's satisfaction with a resolution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rating {
    /// 1 to 5; 4 and 5 count as satisfied.
    pub score: u8,
    pub comment: String,
    pub at: UnixMicros,
}

pub const MIN_SCORE: u8 = 1;
pub const MAX_SCORE: u8 = 5;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skill {
    pub tag: Tag,
    pub rank: Rank,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkillRequirement {
    pub tag: Tag,
    pub min_rank: Rank,
}

/// Refuses more than [`MAX_SKILLS`] entries or a tag named twice.
pub fn check_skill_list<'a>(
    field: &str,
    tags: impl ExactSizeIterator<Item = &'a Tag>,
) -> Result<(), DeskError> {
    if tags.len() > MAX_SKILLS {
        return Err(DeskError::invalid(
            field,
            format!("at most {MAX_SKILLS} skills, got {}", tags.len()),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for tag in tags {
        if let Some(named) = NamedSwarm::of(tag) {
            return Err(DeskError::invalid(
                field,
                format!("{named} is a named swarm channel, not a skill"),
            ));
        }
        if !seen.insert(tag) {
            return Err(DeskError::invalid(
                field,
                format!("tag {tag} is named twice"),
            ));
        }
    }
    Ok(())
}

/// A person who owns and helps with tickets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expert {
    pub id: ExpertId,
    pub display_name: String,
    pub skills: Vec<Skill>,
    pub capacity: u32,
    pub presence: Presence,
    /// Active tickets (assigned or waiting) this expert owns.
    pub owned_open: u32,
    /// The desk's assignment counter when routing last made this expert an
    /// owner (0: never); the smaller, the longer they have waited.
    pub last_assigned_seq: u64,
    /// The persisted channel set (swarm membership); `None` until a Subscribe
    /// names channels, meaning "my skill tags".
    pub channels: Option<Vec<Tag>>,
    /// Grows by one with every stored change; writes compare-and-swap on it.
    pub version: u64,
}

impl Expert {
    /// The channels a Subscribe without channels listens on.
    pub fn effective_channels(&self) -> Vec<Tag> {
        match &self.channels {
            Some(channels) => channels.clone(),
            None => self.skills.iter().map(|s| s.tag.clone()).collect(),
        }
    }

    pub fn has_room(&self) -> bool {
        self.owned_open < self.capacity
    }
}

/// What never changes after a ticket is created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketHeader {
    pub id: TicketId,
    pub title: String,
    pub description: String,
    pub requester: String,
    pub channel: ContactChannel,
    pub kind: TicketKind,
    pub priority: Priority,
    pub skills: Vec<SkillRequirement>,
    pub created_at: UnixMicros,
    /// The bot that created the ticket: its tokens alone may see it among bots.
    pub created_by: Option<super::access::BotName>,
}

/// What events change; small, so every event can carry a copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketState {
    pub status: TicketStatus,
    pub owner: Option<ExpertId>,
    /// Collaborators besides the owner, in joining order.
    pub members: Vec<ExpertId>,
    /// Tags RequestHelp added to the audience.
    pub help_tags: Vec<Tag>,
    /// Experts who declined this ticket (released it soon after routing
    /// gave it to them): routing does not hand it back to them.
    pub declined: Vec<ExpertId>,
    pub updated_at: UnixMicros,
    /// Equals the ticket_seq of the ticket's latest event.
    pub version: u64,
    /// Service-level clocks.
    pub sla: SlaClocks,
    /// Named swarms the ticket has reached besides its skill channels:
    /// `sev1` from creation for P1, `triage` or `backlog` after a breach.
    pub escalated: Vec<Tag>,
    /// The vendor it waits or waited on (the latest one).
    pub vendor: Option<VendorRef>,
    /// The requester's rating of the current resolution.
    pub rating: Option<Rating>,
    /// When the current owner got the ticket.
    pub owned_since: Option<UnixMicros>,
}

impl TicketState {
    /// A ticket before its first event: open, unowned, version 0, with
    /// clocks not yet counting.
    pub fn blank(now: UnixMicros, sla: SlaClocks) -> Self {
        TicketState {
            status: TicketStatus::Open,
            owner: None,
            members: vec![],
            help_tags: vec![],
            declined: vec![],
            updated_at: now,
            version: 0,
            sla,
            escalated: vec![],
            vendor: None,
            rating: None,
            owned_since: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    pub header: Arc<TicketHeader>,
    pub state: TicketState,
}

impl Ticket {
    pub fn id(&self) -> TicketId {
        self.header.id
    }

    /// Every tag whose channel the ticket reaches: its skills, help tags
    /// and the named swarms it was escalated to.
    pub fn audience(&self) -> impl Iterator<Item = &Tag> {
        self.skill_audience().chain(self.state.escalated.iter())
    }

    /// The skill channels the ticket reaches: its skills and help tags.
    pub fn skill_audience(&self) -> impl Iterator<Item = &Tag> {
        self.header
            .skills
            .iter()
            .map(|s| &s.tag)
            .chain(self.state.help_tags.iter())
    }

    pub fn involves(&self, expert: &ExpertId) -> bool {
        self.state.owner.as_ref() == Some(expert) || self.state.members.contains(expert)
    }
}

/// A ticket's or an article's title: required, at most [`MAX_TITLE_CHARS`].
pub fn check_title(field: &str, title: &str) -> Result<(), DeskError> {
    if title.trim().is_empty() {
        return Err(DeskError::invalid(field, "a title is required"));
    }
    let chars = title.chars().count();
    if chars > MAX_TITLE_CHARS {
        return Err(DeskError::invalid(
            field,
            format!("{chars} characters is over the limit of {MAX_TITLE_CHARS}"),
        ));
    }
    Ok(())
}

/// Title, description and requester checks shared by every entry point.
pub fn check_text(field: &str, value: &str, max_bytes: usize) -> Result<(), DeskError> {
    if value.len() > max_bytes {
        return Err(DeskError::invalid(
            field,
            format!("{} bytes is over the limit of {max_bytes}", value.len()),
        ));
    }
    Ok(())
}

pub fn check_short_text(field: &str, value: &str) -> Result<(), DeskError> {
    let chars = value.chars().count();
    if chars > MAX_SHORT_TEXT_CHARS {
        return Err(DeskError::invalid(
            field,
            format!("{chars} characters is over the limit of {MAX_SHORT_TEXT_CHARS}"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(DeskError::invalid(
            field,
            "control characters are not allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_pattern() {
        for ok in [
            "network",
            "a",
            "office365",
            "k8s.net-ops_2",
            &"x".repeat(64),
        ] {
            assert!(Tag::parse("t", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Network",
            "-net",
            ".x",
            "net work",
            "net/x",
            &"x".repeat(65),
            "é",
        ] {
            assert!(Tag::parse("t", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ticket_ids_round_trip() {
        let id = TicketId::parse("id", "T-42").unwrap();
        assert_eq!(id, TicketId(42));
        assert_eq!(id.to_string(), "T-42");
        for bad in ["", "42", "T-", "T-0", "T-x", "t-1", "T--1"] {
            assert!(TicketId::parse("id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expert_ids_follow_the_pattern() {
        assert!(ExpertId::parse("e", "alice@example.com").is_ok());
        assert!(ExpertId::parse("e", "Bob_2").is_ok());
        for bad in ["", "-bob", "bob smith", "bob/x", &"b".repeat(129)] {
            assert!(ExpertId::parse("e", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn enums_refuse_unknown_numbers() {
        assert_eq!(Rank::from_number(3), Some(Rank::L3));
        assert_eq!(Rank::from_number(0), None);
        assert_eq!(Rank::from_number(4), None);
        assert!(Rank::L3 > Rank::L1);
        assert!(Priority::P1 < Priority::P4);
        assert_eq!(
            "waiting-customer".parse(),
            Ok(TicketStatus::WaitingCustomer)
        );
    }

    #[test]
    fn duplicate_or_too_many_skills_are_refused() {
        let t = |s: &str| Tag::parse("t", s).unwrap();
        let dup = [t("a"), t("b"), t("a")];
        assert!(check_skill_list("skills", dup.iter()).is_err());
        let many: Vec<Tag> = (0..17).map(|i| t(&format!("t{i}"))).collect();
        assert!(check_skill_list("skills", many.iter()).is_err());
        assert!(check_skill_list("skills", many[..16].iter()).is_ok());
    }
}
