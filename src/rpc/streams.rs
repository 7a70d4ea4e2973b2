//! Response streams: a subscription (gap-free, resumable) merged with the
//! ephemeral frames that ride beside it (activity, expert changes).

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tonic::Status;

use super::pb;
use super::status_of_end;
use crate::auth::StreamPermit;
use crate::desk::{ActivityFeed, Desk};
use crate::domain::DeskError;
use crate::hub::{Delivery, Subscription};

pub type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Frames that are never stored, sent between a stream's events.
pub type SideFrames<T> = Pin<Box<dyn Stream<Item = T> + Send + 'static>>;

/// Turns a subscription into a response stream that ends with a status when
/// the server ends it (UNAUTHENTICATED when its token was revoked), and
/// unsubscribes when the client goes away. The permit counts the stream
/// against its caller's and the server's caps while it is open. `side`
/// frames go out as they come, between events.
pub fn into_stream<S, T>(
    subscription: S,
    permit: StreamPermit,
    map: fn(&Delivery) -> T,
    side: Option<SideFrames<T>>,
) -> EventStream<T>
where
    S: AsMut<Subscription> + Send + 'static,
    T: Send + 'static,
{
    Box::pin(futures_util::stream::unfold(
        Some((subscription, permit, side)),
        move |state| async move {
            let (mut subscription, permit, mut side) = state?;
            loop {
                // Subscription::next is cancel-safe: a side frame that wins
                // the race loses no event.
                let next = tokio::select! {
                    biased;
                    frame = next_side(&mut side) => match frame {
                        Some(frame) => return Some((Ok(frame), Some((subscription, permit, side)))),
                        None => {
                            side = None;
                            continue;
                        }
                    },
                    next = subscription.as_mut().next() => next,
                };
                return match next {
                    Ok(delivery) => Some((Ok(map(&delivery)), Some((subscription, permit, side)))),
                    Err(_) if permit.caller().is_revoked() => Some((
                        Err(Status::from(DeskError::Unauthenticated(
                            "token revoked".into(),
                        ))),
                        None,
                    )),
                    Err(end) => Some((Err(status_of_end(end)), None)),
                };
            }
        },
    ))
}

/// The next side frame; pending forever when there is no side stream.
async fn next_side<T>(side: &mut Option<SideFrames<T>>) -> Option<T> {
    match side {
        Some(frames) => frames.next().await,
        None => std::future::pending().await,
    }
}

/// An expert's activity frames (who views or types on their tickets).
pub fn activity_frames(feed: ActivityFeed) -> SideFrames<pb::SwarmEvent> {
    Box::pin(futures_util::stream::unfold(feed, |mut feed| async move {
        let view = feed.frames.recv().await?;
        let frame = pb::SwarmEvent {
            activity: Some(super::convert::ticket_activity(&view)),
            ..Default::default()
        };
        Some((frame, feed))
    }))
}

/// The experts whose online state or presence changed, as they are now.
pub fn expert_frames(desk: &Desk) -> SideFrames<pb::SwarmEvent> {
    let changes = tokio_stream::wrappers::BroadcastStream::new(desk.expert_changes());
    let desk = desk.clone();
    Box::pin(changes.filter_map(move |change| {
        // A board that fell behind misses some changes (the console reads
        // the experts again when it reconnects).
        let view = change.ok().and_then(|id| desk.get_expert(&id).ok());
        std::future::ready(view.map(|view| pb::SwarmEvent {
            expert: Some(super::convert::expert(&view)),
            ..Default::default()
        }))
    }))
}
