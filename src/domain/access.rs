//! Who may do what: the roles a token grants, the one table of rights, and
//! the format of tokens (random secrets of which only a hash is stored).

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::error::{quote, DeskError};
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
                    format!(
                        "bot name {} does not match [A-Za-z0-9][A-Za-z0-9._@-]{{0,127}}",
                        quote(raw)
                    ),
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
    /// ClusterStatus: admins and supervisors.
    ClusterStatus,
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
    /// WatchDesk: every event of the desk, live (admins and supervisors).
    WatchDesk,
    /// ReportActivity: viewing or typing on a ticket, as oneself.
    ReportActivity,
    /// WhoAmI: one's own token; every role.
    WhoAmI,
}

impl Operation {
    pub const ALL: [Operation; 31] = {
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
            ClusterStatus,
            GetStats,
            EditArticle,
            ReadArticle,
            PublishArticle,
            SearchArticles,
            SuggestArticles,
            RecordDeflection,
            WatchDesk,
            ReportActivity,
            WhoAmI,
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
                    | ClusterStatus
                    | GetStats
                    | ReadArticle
                    | PublishArticle
                    | SearchArticles
                    | SuggestArticles
                    | WatchDesk
                    | WhoAmI
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
                    | ReportActivity
                    | WhoAmI
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
                    | WhoAmI
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
                format!(
                    "token id {} is not of the form tok_<16 hex digits>",
                    quote(raw)
                ),
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
mod tests;
