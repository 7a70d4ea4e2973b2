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
            ClusterStatus,
            GetStats,
            ReadArticle,
            PublishArticle,
            SearchArticles,
            SuggestArticles,
            WatchDesk,
            WhoAmI
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
            SuggestArticles,
            ReportActivity,
            WhoAmI
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
            RecordDeflection,
            WhoAmI
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
