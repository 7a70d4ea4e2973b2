//! Who may do what: the roles a token grants, the one table of rights, and
//! the format of tokens (random secrets of which only a hash is stored).

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::DeskError;
use super::model::{ExpertId, TicketHeader, UnixMicros, Visibility};

numbered_enum! {
    /// What a token may do; see [`Principal::require`] for the table.
    Role {
        /// Everything, including experts and tokens.
        Admin = 1 => "admin",
        /// Reads everything; transfers or releases any ticket.
        Supervisor = 2 => "supervisor",
        /// Acts as one expert.
        Expert = 3 => "expert",
        /// A chat or e-mail relay: creates tickets and speaks for their requesters.
        Bot = 4 => "bot",
    }
}

/// A bot's name; tickets remember the bot that created them, so every token
/// of one bot (rotation) sees the same tickets. Same characters as an
/// expert id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BotName(String);

impl BotName {
    pub fn parse(field: &str, raw: &str) -> Result<Self, DeskError> {
        if raw.is_empty() {
            return Err(DeskError::invalid(field, "a bot name is required"));
        }
        // Same rules as an expert id; reuse them rather than restate them.
        ExpertId::parse(field, raw)
            .map(|id| BotName(id.as_str().to_owned()))
            .map_err(|_| {
                DeskError::invalid(
                    field,
                    format!("bot name {raw:?} does not match [A-Za-z0-9][A-Za-z0-9._@-]{{0,127}}"),
                )
            })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BotName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A role with the identity it is bound to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Grant {
    Admin,
    Supervisor,
    Expert(ExpertId),
    Bot(BotName),
}

impl Grant {
    /// The grant a create-token request describes: the expert id goes with
    /// the expert role and the bot name with the bot role, and neither
    /// with any other (a stray one is a client's mistake, not ignored).
    pub fn new(role: Role, expert_id: &str, bot_name: &str) -> Result<Self, DeskError> {
        if role != Role::Expert && !expert_id.is_empty() {
            return Err(DeskError::invalid(
                "expert_id",
                format!("only an expert token names an expert, not a {role} token"),
            ));
        }
        if role != Role::Bot && !bot_name.is_empty() {
            return Err(DeskError::invalid(
                "bot_name",
                format!("only a bot token names a bot, not a {role} token"),
            ));
        }
        Ok(match role {
            Role::Admin => Grant::Admin,
            Role::Supervisor => Grant::Supervisor,
            Role::Expert => Grant::Expert(ExpertId::parse("expert_id", expert_id)?),
            Role::Bot => Grant::Bot(BotName::parse("bot_name", bot_name)?),
        })
    }

    pub fn role(&self) -> Role {
        match self {
            Grant::Admin => Role::Admin,
            Grant::Supervisor => Role::Supervisor,
            Grant::Expert(_) => Role::Expert,
            Grant::Bot(_) => Role::Bot,
        }
    }

    /// The expert id or bot name the grant is bound to, if any.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Grant::Admin | Grant::Supervisor => None,
            Grant::Expert(e) => Some(e.as_str()),
            Grant::Bot(b) => Some(b.as_str()),
        }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.subject() {
            Some(subject) => write!(f, "{}:{subject}", self.role()),
            None => f.write_str(self.role().label()),
        }
    }
}

/// Each RPC, as far as rights go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    CreateTicket,
    GetTicket,
    ListTickets,
    WatchTicket,
    PostMessage,
    ClaimTicket,
    TransferTicket,
    ReleaseTicket,
    JoinSwarm,
    LeaveSwarm,
    RequestHelp,
    UpdateStatus,
    RateTicket,
    RegisterExpert,
    GetExpert,
    ListExperts,
    Subscribe,
    SetPresence,
    Backup,
    ManageTokens,
    GetStats,
    /// CreateArticle, UpdateArticle.
    EditArticle,
    /// GetArticle (bots: published articles only).
    ReadArticle,
    /// PublishArticle, ArchiveArticle (experts: rank L2 in the subject).
    PublishArticle,
    SearchArticles,
    SuggestArticles,
    RecordDeflection,
}

impl Operation {
    pub const ALL: [Operation; 27] = {
        use Operation::*;
        [
            CreateTicket,
            GetTicket,
            ListTickets,
            WatchTicket,
            PostMessage,
            ClaimTicket,
            TransferTicket,
            ReleaseTicket,
            JoinSwarm,
            LeaveSwarm,
            RequestHelp,
            UpdateStatus,
            RateTicket,
            RegisterExpert,
            GetExpert,
            ListExperts,
            Subscribe,
            SetPresence,
            Backup,
            ManageTokens,
            GetStats,
            EditArticle,
            ReadArticle,
            PublishArticle,
            SearchArticles,
            SuggestArticles,
            RecordDeflection,
        ]
    };
}

/// The caller of an RPC, as its token says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub token_id: TokenId,
    /// The token's label, for logs (never the secret).
    pub label: String,
    pub grant: Grant,
}

fn denied(why: impl Into<String>) -> DeskError {
    DeskError::PermissionDenied(why.into())
}

impl Principal {
    /// Whether the role may call `op` at all. Calls that name an expert or a
    /// ticket are checked further by [`Principal::act_as`],
    /// [`Principal::may_move`], [`Principal::may_see`] and
    /// [`Principal::may_post`].
    pub fn require(&self, op: Operation) -> Result<(), DeskError> {
        use Operation::*;
        let allowed = match &self.grant {
            Grant::Admin => true,
            Grant::Supervisor => matches!(
                op,
                GetTicket
                    | ListTickets
                    | WatchTicket
                    | TransferTicket
                    | ReleaseTicket
                    | GetExpert
                    | ListExperts
                    | GetStats
                    | ReadArticle
                    | PublishArticle
                    | SearchArticles
                    | SuggestArticles
            ),
            Grant::Expert(_) => matches!(
                op,
                GetTicket
                    | ListTickets
                    | WatchTicket
                    | PostMessage
                    | ClaimTicket
                    | TransferTicket
                    | ReleaseTicket
                    | JoinSwarm
                    | LeaveSwarm
                    | RequestHelp
                    | UpdateStatus
                    | GetExpert
                    | ListExperts
                    | Subscribe
                    | SetPresence
                    | GetStats
                    | EditArticle
                    | ReadArticle
                    | PublishArticle
                    | SearchArticles
                    | SuggestArticles
            ),
            Grant::Bot(_) => matches!(
                op,
                CreateTicket
                    | GetTicket
                    | ListTickets
                    | WatchTicket
                    | PostMessage
                    | RateTicket
                    | ReadArticle
                    | SuggestArticles
                    | RecordDeflection
            ),
        };
        if allowed {
            Ok(())
        } else {
            Err(denied(format!(
                "the {} role may not call {op:?}",
                self.grant.role()
            )))
        }
    }

    /// For calls made as an expert (claim, join, subscribe, ...): an expert
    /// token acts only as its own expert; admins act as anyone.
    pub fn act_as(&self, expert: &ExpertId) -> Result<(), DeskError> {
        match &self.grant {
            Grant::Admin => Ok(()),
            Grant::Expert(own) if own == expert => Ok(()),
            Grant::Expert(own) => Err(denied(format!(
                "this token acts only as expert {own}, not {expert}"
            ))),
            other => Err(denied(format!(
                "the {} role does not act as an expert",
                other.role()
            ))),
        }
    }

    /// For transfer and release, which name the expert giving the ticket
    /// up: supervisors may move any ticket, experts only their own.
    pub fn may_move(&self, from: &ExpertId) -> Result<(), DeskError> {
        match &self.grant {
            Grant::Supervisor => Ok(()),
            _ => self.act_as(from),
        }
    }

    /// The bot whose tickets alone this principal may see, if it is one.
    pub fn bot(&self) -> Option<&BotName> {
        match &self.grant {
            Grant::Bot(bot) => Some(bot),
            _ => None,
        }
    }

    /// Whether the principal may read this ticket. A bot sees only tickets
    /// it created; the refusal reads the same whether or not the ticket
    /// exists (pass `None` for a missing one), so it leaks nothing.
    pub fn may_see(&self, header: Option<&TicketHeader>) -> Result<(), DeskError> {
        match self.bot() {
            None => Ok(()),
            Some(bot) if header.is_some_and(|h| h.created_by.as_ref() == Some(bot)) => Ok(()),
            Some(bot) => Err(denied(format!("bot {bot} may only use tickets it created"))),
        }
    }

    /// Whether the principal may post as `author` with `visibility` on a
    /// ticket (`None`: missing). A bot speaks only for the requester of its
    /// own tickets, in public; an expert only as itself.
    pub fn may_post(
        &self,
        header: Option<&TicketHeader>,
        author: &str,
        visibility: Visibility,
    ) -> Result<(), DeskError> {
        match &self.grant {
            Grant::Admin => Ok(()),
            Grant::Expert(own) if own.as_str() == author => Ok(()),
            Grant::Expert(own) => Err(denied(format!(
                "this token posts only as expert {own}, not {author:?}"
            ))),
            Grant::Bot(_) => {
                self.may_see(header)?;
                if header.is_some_and(|h| h.requester != author) {
                    return Err(denied("a bot posts only as the ticket's requester"));
                }
                if visibility != Visibility::Public {
                    return Err(denied("a bot posts only PUBLIC messages"));
                }
                Ok(())
            }
            Grant::Supervisor => self.require(Operation::PostMessage),
        }
    }
}

/// A token's public id (`tok_` and 16 hex digits): what lists show and
/// revoke takes. Not a secret.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TokenId(String);

impl TokenId {
    pub const PREFIX: &'static str = "tok_";

    pub fn parse(field: &str, raw: &str) -> Result<Self, DeskError> {
        let ok = raw
            .strip_prefix(Self::PREFIX)
            .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()));
        if ok {
            Ok(TokenId(raw.to_ascii_lowercase()))
        } else {
            Err(DeskError::invalid(
                field,
                format!("token id {raw:?} is not of the form tok_<16 hex digits>"),
            ))
        }
    }

    /// An id from 8 random bytes.
    pub fn from_random(bytes: [u8; 8]) -> Self {
        TokenId(format!("{}{}", Self::PREFIX, hex(&bytes)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a token's text: what the store keeps instead of the token.
/// A plain hash suffices because tokens carry 256 random bits: there is no
/// dictionary to attack, unlike a password.
pub type SecretHash = [u8; 32];

/// The text a client sends: `swd1_` and 64 hex digits (256 random bits).
/// The version prefix lets a token of another format be told apart (and
/// refused) without a lookup, and lets secret scanners spot a leaked one.
pub const TOKEN_PREFIX: &str = "swd1_";
const TOKEN_HEX_LEN: usize = 64;

/// Makes the token text for 32 random bytes.
pub fn token_text(secret: [u8; 32]) -> String {
    format!("{TOKEN_PREFIX}{}", hex(&secret))
}

/// Checks the shape of a presented token and hashes it. Errors say what
/// is wrong with the shape, never echo the token.
pub fn hash_presented(token: &str) -> Result<SecretHash, DeskError> {
    let well_formed = token.strip_prefix(TOKEN_PREFIX).is_some_and(|hex| {
        hex.len() == TOKEN_HEX_LEN && hex.bytes().all(|b| b.is_ascii_hexdigit())
    });
    if !well_formed {
        return Err(DeskError::Unauthenticated(format!(
            "malformed token: expected {TOKEN_PREFIX} and {TOKEN_HEX_LEN} hex digits"
        )));
    }
    Ok(Sha256::digest(token.to_ascii_lowercase().as_bytes()).into())
}

/// A token as stored: never the secret, only its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: TokenId,
    pub label: String,
    pub grant: Grant,
    pub secret_hash: SecretHash,
    pub created_at: UnixMicros,
    pub last_used_at: Option<UnixMicros>,
    pub revoked_at: Option<UnixMicros>,
}

impl TokenRecord {
    pub fn principal(&self) -> Principal {
        Principal {
            token_id: self.id.clone(),
            label: self.label.clone(),
            grant: self.grant.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::{ContactChannel, Priority, TicketId, TicketKind};
    use std::sync::Arc;

    fn principal(grant: Grant) -> Principal {
        Principal {
            token_id: TokenId::from_random([1; 8]),
            label: "test".into(),
            grant,
        }
    }

    fn expert(id: &str) -> ExpertId {
        ExpertId::parse("e", id).unwrap()
    }

    fn bot(name: &str) -> BotName {
        BotName::parse("b", name).unwrap()
    }

    fn header(created_by: Option<BotName>) -> Arc<TicketHeader> {
        Arc::new(TicketHeader {
            id: TicketId(1),
            title: "t".into(),
            description: String::new(),
            requester: "cust@example.com".into(),
            channel: ContactChannel::Chat,
            kind: TicketKind::Incident,
            priority: Priority::P3,
            skills: vec![],
            created_at: 0,
            created_by,
        })
    }

    #[test]
    fn the_role_table_matches_the_issue() {
        use Operation::*;
        let admin = principal(Grant::Admin);
        let supervisor = principal(Grant::Supervisor);
        let ann = principal(Grant::Expert(expert("ann")));
        let relay = principal(Grant::Bot(bot("chat")));
        let all = Operation::ALL;
        for op in all {
            assert!(admin.require(op).is_ok(), "admin {op:?}");
        }
        let allowed = |p: &Principal| -> Vec<Operation> {
            all.iter()
                .copied()
                .filter(|op| p.require(*op).is_ok())
                .collect()
        };
        assert_eq!(
            allowed(&supervisor),
            vec![
                GetTicket,
                ListTickets,
                WatchTicket,
                TransferTicket,
                ReleaseTicket,
                GetExpert,
                ListExperts,
                GetStats,
                ReadArticle,
                PublishArticle,
                SearchArticles,
                SuggestArticles
            ]
        );
        assert_eq!(
            allowed(&ann),
            vec![
                GetTicket,
                ListTickets,
                WatchTicket,
                PostMessage,
                ClaimTicket,
                TransferTicket,
                ReleaseTicket,
                JoinSwarm,
                LeaveSwarm,
                RequestHelp,
                UpdateStatus,
                GetExpert,
                ListExperts,
                Subscribe,
                SetPresence,
                GetStats,
                EditArticle,
                ReadArticle,
                PublishArticle,
                SearchArticles,
                SuggestArticles
            ]
        );
        assert_eq!(
            allowed(&relay),
            vec![
                CreateTicket,
                GetTicket,
                ListTickets,
                WatchTicket,
                PostMessage,
                RateTicket,
                ReadArticle,
                SuggestArticles,
                RecordDeflection
            ]
        );
    }

    #[test]
    fn experts_act_only_as_themselves_and_supervisors_move_any_ticket() {
        let ann = principal(Grant::Expert(expert("ann")));
        assert!(ann.act_as(&expert("ann")).is_ok());
        assert!(matches!(
            ann.act_as(&expert("bob")),
            Err(DeskError::PermissionDenied(_))
        ));
        assert!(ann.may_move(&expert("ann")).is_ok());
        assert!(ann.may_move(&expert("bob")).is_err());
        let supervisor = principal(Grant::Supervisor);
        assert!(supervisor.may_move(&expert("bob")).is_ok());
        assert!(supervisor.act_as(&expert("bob")).is_err());
        assert!(principal(Grant::Admin).act_as(&expert("bob")).is_ok());
    }

    #[test]
    fn a_bot_sees_and_speaks_only_for_its_own_tickets_in_public() {
        let relay = principal(Grant::Bot(bot("chat")));
        let own = header(Some(bot("chat")));
        let other = header(Some(bot("mail")));
        let staff = header(None);
        assert!(relay.may_see(Some(&own)).is_ok());
        let refused_other = relay.may_see(Some(&other)).unwrap_err().to_string();
        let refused_missing = relay.may_see(None).unwrap_err().to_string();
        assert_eq!(
            refused_other, refused_missing,
            "refusal must not leak existence"
        );
        assert!(relay.may_see(Some(&staff)).is_err());
        assert!(relay
            .may_post(Some(&own), "cust@example.com", Visibility::Public)
            .is_ok());
        assert!(relay
            .may_post(Some(&own), "cust@example.com", Visibility::Internal)
            .is_err());
        assert!(relay
            .may_post(Some(&own), "ann", Visibility::Public)
            .is_err());
        assert!(relay
            .may_post(Some(&other), "cust@example.com", Visibility::Public)
            .is_err());
        let ann = principal(Grant::Expert(expert("ann")));
        assert!(ann
            .may_post(Some(&own), "ann", Visibility::Internal)
            .is_ok());
        assert!(ann.may_post(Some(&own), "bob", Visibility::Public).is_err());
    }

    #[test]
    fn tokens_are_checked_for_shape_and_hashed() {
        let text = token_text([7; 32]);
        assert!(text.starts_with(TOKEN_PREFIX));
        assert_eq!(text.len(), TOKEN_PREFIX.len() + 64);
        let hash = hash_presented(&text).unwrap();
        assert_eq!(
            hash,
            hash_presented(&text.to_ascii_uppercase().replace("SWD1_", "swd1_")).unwrap()
        );
        assert_ne!(hash, hash_presented(&token_text([8; 32])).unwrap());
        for bad in [
            "",
            "swd1_",
            "swd0_0707070707070707070707070707070707070707070707070707070707070707",
            &text[..text.len() - 1],
            &format!("{text}0"),
            "swd1_zz07070707070707070707070707070707070707070707070707070707070707",
        ] {
            let err = hash_presented(bad).unwrap_err();
            assert!(matches!(err, DeskError::Unauthenticated(_)), "{bad:?}");
            // The prefix alone is named by the message on purpose; a secret is longer.
            if bad.len() > TOKEN_PREFIX.len() {
                assert!(!err.to_string().contains(bad), "error echoes the token");
            }
        }
    }

    #[test]
    fn a_grant_takes_exactly_the_identity_its_role_needs() {
        assert_eq!(Grant::new(Role::Admin, "", "").unwrap(), Grant::Admin);
        assert_eq!(
            Grant::new(Role::Expert, "ann", "").unwrap(),
            Grant::Expert(expert("ann"))
        );
        assert_eq!(
            Grant::new(Role::Bot, "", "chat").unwrap(),
            Grant::Bot(bot("chat"))
        );
        for (role, e, b, field) in [
            (Role::Expert, "", "", "expert_id"),
            (Role::Bot, "", "", "bot_name"),
            (Role::Admin, "ann", "", "expert_id"),
            (Role::Supervisor, "", "chat", "bot_name"),
            (Role::Expert, "ann", "chat", "bot_name"),
        ] {
            match Grant::new(role, e, b) {
                Err(DeskError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{role} {e:?} {b:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn token_ids_and_bot_names_are_validated() {
        let id = TokenId::from_random([0xab; 8]);
        assert_eq!(id.as_str(), "tok_abababababababab");
        assert_eq!(TokenId::parse("id", id.as_str()).unwrap(), id);
        assert!(TokenId::parse("id", "tok_123").is_err());
        assert!(TokenId::parse("id", "abababababababababab").is_err());
        assert!(BotName::parse("bot", "chat-relay").is_ok());
        assert!(BotName::parse("bot", "").is_err());
        assert!(BotName::parse("bot", "no spaces").is_err());
    }
}
