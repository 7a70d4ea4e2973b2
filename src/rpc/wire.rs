//! `swarmdesk.v1.SwarmEvent`, written by hand so that one event's encoding
//! is shared by every stream it goes to.
//!
//! A ticket event reaches every expert on its channels (ten in the
//! benchmark's create, a thousand or more in an incident) and is the same
//! for all of them but for the reason, which sits outside it. The generated
//! type would convert and encode the event once per stream; this one
//! carries the encoded `event` field as shared bytes, written as they are
//! (an embedded message and `bytes` are the same on the wire). It decodes
//! like the generated type, so clients see no difference.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};
use prost::DecodeError;

use super::pb;

const POSITION: u32 = 1;
const REASON: u32 = 2;
const EVENT: u32 = 3;
const ACTIVITY: u32 = 4;
const EXPERT: u32 = 5;

/// One event on an expert's stream (see the proto for the fields).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SwarmEvent {
    pub position: u64,
    /// A `SwarmEventReason`.
    pub reason: i32,
    pub event: Option<pb::TicketEvent>,
    /// `event` already encoded, shared between streams; sent in its place
    /// when set. Never set by decoding.
    pub encoded_event: Option<Bytes>,
    /// Ephemeral frames (position 0, no event).
    pub activity: Option<pb::TicketActivity>,
    pub expert: Option<pb::Expert>,
}

impl SwarmEvent {
    /// The reason as its enum, as the generated accessor gives it.
    pub fn reason(&self) -> pb::SwarmEventReason {
        pb::SwarmEventReason::try_from(self.reason).unwrap_or_default()
    }
}

/// `event` encoded as the bytes of a `SwarmEvent.event` field's value.
pub fn encode_event(event: &pb::TicketEvent) -> Bytes {
    Bytes::from(prost::Message::encode_to_vec(event))
}

impl prost::Message for SwarmEvent {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if self.position != 0 {
            encoding::uint64::encode(POSITION, &self.position, buf);
        }
        if self.reason != 0 {
            encoding::int32::encode(REASON, &self.reason, buf);
        }
        match (&self.encoded_event, &self.event) {
            (Some(bytes), _) => encoding::bytes::encode(EVENT, bytes, buf),
            (None, Some(event)) => encoding::message::encode(EVENT, event, buf),
            (None, None) => {}
        }
        if let Some(activity) = &self.activity {
            encoding::message::encode(ACTIVITY, activity, buf);
        }
        if let Some(expert) = &self.expert {
            encoding::message::encode(EXPERT, expert, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            POSITION => encoding::uint64::merge(wire_type, &mut self.position, buf, ctx),
            REASON => encoding::int32::merge(wire_type, &mut self.reason, buf, ctx),
            EVENT => encoding::message::merge(
                wire_type,
                self.event.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            ACTIVITY => encoding::message::merge(
                wire_type,
                self.activity.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            EXPERT => encoding::message::merge(
                wire_type,
                self.expert.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            _ => encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let mut len = 0;
        if self.position != 0 {
            len += encoding::uint64::encoded_len(POSITION, &self.position);
        }
        if self.reason != 0 {
            len += encoding::int32::encoded_len(REASON, &self.reason);
        }
        len += match (&self.encoded_event, &self.event) {
            (Some(bytes), _) => encoding::bytes::encoded_len(EVENT, bytes),
            (None, Some(event)) => encoding::message::encoded_len(EVENT, event),
            (None, None) => 0,
        };
        if let Some(activity) = &self.activity {
            len += encoding::message::encoded_len(ACTIVITY, activity);
        }
        if let Some(expert) = &self.expert {
            len += encoding::message::encoded_len(EXPERT, expert);
        }
        len
    }

    fn clear(&mut self) {
        *self = SwarmEvent::default();
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn event() -> pb::TicketEvent {
        pb::TicketEvent {
            position: 42,
            ticket_id: "T-7".into(),
            ticket_seq: 3,
            r#type: pb::TicketEventType::Message as i32,
            actor_id: "ann".into(),
            payload: Some(pb::ticket_event::Payload::Message(pb::MessagePosted {
                body: "rebooted the router".into(),
                visibility: 1,
            })),
            ..Default::default()
        }
    }

    #[test]
    fn shared_bytes_encode_exactly_as_the_event_itself() {
        let decoded = SwarmEvent {
            position: 42,
            reason: pb::SwarmEventReason::Swarm as i32,
            event: Some(event()),
            ..Default::default()
        };
        let shared = SwarmEvent {
            event: None,
            encoded_event: Some(encode_event(&event())),
            ..decoded.clone()
        };
        let wire = shared.encode_to_vec();
        assert_eq!(wire, decoded.encode_to_vec());
        assert_eq!(wire.len(), shared.encoded_len());
        let back = SwarmEvent::decode(wire.as_slice()).unwrap();
        assert_eq!(back, decoded);
        assert_eq!(back.reason(), pb::SwarmEventReason::Swarm);
    }

    #[test]
    fn unknown_fields_are_skipped_and_defaults_are_not_written() {
        assert!(SwarmEvent::default().encode_to_vec().is_empty());
        let mut wire = SwarmEvent {
            position: 1,
            ..Default::default()
        }
        .encode_to_vec();
        // Field 9, a varint, from a newer server.
        wire.extend_from_slice(&[9 << 3, 5]);
        assert_eq!(SwarmEvent::decode(wire.as_slice()).unwrap().position, 1);
    }

    #[test]
    fn ephemeral_frames_round_trip_without_an_event_or_a_position() {
        let frame = SwarmEvent {
            activity: Some(pb::TicketActivity {
                ticket_id: "T-7".into(),
                experts: vec![pb::ExpertActivity {
                    expert_id: "ann".into(),
                    display_name: "Ann".into(),
                    activity: pb::Activity::Typing as i32,
                    since: None,
                }],
            }),
            expert: Some(pb::Expert {
                id: "bob".into(),
                online: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        let wire = frame.encode_to_vec();
        assert_eq!(wire.len(), frame.encoded_len());
        let back = SwarmEvent::decode(wire.as_slice()).unwrap();
        assert_eq!(back, frame);
        assert_eq!(back.position, 0);
        assert!(back.event.is_none());
    }
}
