//! Experts and presence: registration, availability, and the Subscribe
//! stream that makes an expert online (and its end, offline).
use super::deadlines::{micros, Deadline};
use super::routing::RoutingState;
use super::{Desk, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};

use std::collections::BTreeSet;

use tokio_util::sync::CancellationToken;

use crate::domain::{
    check_short_text, check_skill_list, DeskError, Expert, ExpertId, Presence, Skill, Tag,
    UnixMicros, Viewer, DEFAULT_CAPACITY, MAX_CAPACITY, MAX_CHANNELS,
};
use crate::hub::{Filter, Start, Subscription};

/// An expert as RegisterExpert gives it.
#[derive(Clone, Debug)]
pub struct ExpertProfile {
    pub id: ExpertId,
    pub display_name: String,
    pub skills: Vec<Skill>,
    /// 0 means [`DEFAULT_CAPACITY`].
    pub capacity: u32,
}

/// An expert with what only the running server knows.
#[derive(Clone, Debug)]
pub struct ExpertView {
    pub expert: Expert,
    pub online: bool,
}

impl Desk {
    /// Creates an expert, or updates name, skills and capacity of one,
    /// keeping their load, presence and channels.
    pub async fn register_expert(&self, profile: ExpertProfile) -> Result<ExpertView, DeskError> {
        self.ready().await?;
        check_short_text("expert.display_name", &profile.display_name)?;
        check_skill_list("expert.skills", profile.skills.iter().map(|s| &s.tag))?;
        if profile.capacity > MAX_CAPACITY {
            return Err(DeskError::invalid(
                "expert.capacity",
                format!("{} is over the limit of {MAX_CAPACITY}", profile.capacity),
            ));
        }
        let capacity = match profile.capacity {
            0 => DEFAULT_CAPACITY,
            n => n,
        };
        let (view, lsn) = {
            let mut state = self.lock();
            let expert = match state.experts.get(&profile.id) {
                Some(existing) => Expert {
                    display_name: profile.display_name,
                    skills: profile.skills,
                    capacity,
                    version: existing.version + 1,
                    ..existing.clone()
                },
                None => Expert {
                    id: profile.id.clone(),
                    display_name: profile.display_name,
                    skills: profile.skills,
                    capacity,
                    presence: Presence::Available,
                    owned_open: 0,
                    last_assigned_seq: 0,
                    channels: None,
                    version: 1,
                },
            };
            let mut lsn = self.append_expert(&mut state, &expert)?;
            self.inner.hub.update_skills(&expert.id, &expert.skills);
            state.put_expert(expert.clone());
            // New skills or room may open waiting tickets to them.
            let routed = self.route_waiting_to(&mut state, &profile.id)?;
            lsn = lsn.max(routed.lsn);
            let expert = state.expert(&profile.id)?.clone();
            let online = state.is_online(&expert.id);
            (ExpertView { expert, online }, lsn)
        };
        self.durable(lsn).await?;
        self.expert_changed(&profile.id);
        Ok(view)
    }

    pub fn get_expert(&self, id: &ExpertId) -> Result<ExpertView, DeskError> {
        let state = self.lock();
        let expert = state.expert(id)?.clone();
        let online = state.is_online(id);
        Ok(ExpertView { expert, online })
    }

    /// Experts in id order, starting at `from`; the next page's start.
    pub fn list_experts(
        &self,
        from: Option<&ExpertId>,
        page_size: usize,
    ) -> (Vec<ExpertView>, Option<ExpertId>) {
        let page_size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let state = self.lock();
        let mut iter = match from {
            Some(from) => state.experts.range(from.clone()..),
            None => state.experts.range(..),
        };
        let page: Vec<ExpertView> = iter
            .by_ref()
            .take(page_size)
            .map(|(id, e)| ExpertView {
                expert: e.clone(),
                online: state.is_online(id),
            })
            .collect();
        let next = iter.next().map(|(id, _)| id.clone());
        (page, next)
    }

    pub async fn set_presence(
        &self,
        id: &ExpertId,
        presence: Presence,
    ) -> Result<ExpertView, DeskError> {
        self.ready().await?;
        let (view, lsn) = {
            let mut state = self.lock();
            let mut expert = state.expert(id)?.clone();
            let mut lsn = 0;
            if expert.presence != presence {
                expert.presence = presence;
                expert.version += 1;
                lsn = self.append_expert(&mut state, &expert)?;
                state.put_expert(expert);
            }
            if presence == Presence::Available {
                lsn = lsn.max(self.route_waiting_to(&mut state, id)?.lsn);
            }
            let expert = state.expert(id)?.clone();
            let online = state.is_online(id);
            (ExpertView { expert, online }, lsn)
        };
        self.durable(lsn).await?;
        self.expert_changed(id);
        Ok(view)
    }

    /// Opens an expert's stream. Non-empty `channels` replace their persisted
    /// channel set; empty ones use it (or their skill tags). The expert is
    /// online, and routing runs for them, from here until the stream drops
    /// or `stop` (which must end at shutdown too) fires.
    pub async fn subscribe(
        &self,
        id: &ExpertId,
        channels: Vec<Tag>,
        after_position: u64,
        stop: CancellationToken,
    ) -> Result<ExpertStream, DeskError> {
        self.ready().await?;
        if channels.len() > MAX_CHANNELS {
            return Err(DeskError::invalid(
                "channels",
                format!("at most {MAX_CHANNELS} channels, got {}", channels.len()),
            ));
        }
        // Written, not only streamed: PostMessage answers with its event's
        // position before the committer hands the event to the hub. A start
        // beyond what the hub has published is safe: live events up to it
        // are skipped as already seen.
        let last = self.inner.storage.tickets.last_position();
        if after_position > last {
            return Err(DeskError::invalid(
                "after_position",
                format!("{after_position} is beyond the last position, {last}"),
            ));
        }
        let (subscription, presence_routed, lsn) = {
            let mut state = self.lock();
            let mut expert = state.expert(id)?.clone();
            let mut lsn = 0;
            // A follower does not append: there the channels given serve
            // this stream only, and routing to the expert is the writer's.
            let writes = self.writes();
            if writes && !channels.is_empty() {
                let mut wanted = channels.clone();
                wanted.sort();
                wanted.dedup();
                if expert.channels.as_ref() != Some(&wanted) {
                    expert.channels = Some(wanted);
                    expert.version += 1;
                    lsn = self.append_expert(&mut state, &expert)?;
                    state.put_expert(expert.clone());
                }
            }
            if !writes && !channels.is_empty() {
                let mut wanted = channels.clone();
                wanted.sort();
                wanted.dedup();
                expert.channels = Some(wanted);
            }
            let viewer = Viewer {
                expert: id.clone(),
                channels: expert.effective_channels().into_iter().collect(),
                skills: expert.skills.clone(),
            };
            let subscription = self.inner.hub.subscribe(
                self.inner.storage.tickets.clone(),
                Filter::Expert(viewer),
                Start::AfterPosition(after_position),
                stop,
            );
            let streams = state.online.entry(id.clone()).or_insert(0);
            *streams += 1;
            if *streams == 1 {
                self.local_presence_changed();
            }
            state.offline_since.remove(id);
            self.inner.timers.cancel(&Deadline::OwnerAway(id.clone()));
            let routed = if writes {
                self.route_waiting_to(&mut state, id)
            } else {
                Ok(Default::default())
            };
            (subscription, routed, lsn)
        };
        // Created after the lock is released: the guard's Drop takes it.
        let presence = OnlineGuard {
            desk: self.clone(),
            expert: id.clone(),
        };
        let lsn = lsn.max(presence_routed?.lsn);
        self.durable(lsn).await?;
        self.expert_changed(id);
        Ok(ExpertStream {
            subscription,
            _online: presence,
        })
    }

    /// The experts with a stream open on this node (what it reports to
    /// the cluster).
    pub fn local_presence(&self) -> Vec<ExpertId> {
        let state = self.lock();
        let mut ids: Vec<_> = state
            .online
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Changes whenever an expert's first stream on this node opens or
    /// their last one closes (what a cluster node reports at once).
    pub fn local_presence_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.live.local_presence.subscribe()
    }

    fn local_presence_changed(&self) {
        self.inner.live.local_presence.send_modify(|n| *n += 1);
    }

    /// Cluster mode: the experts `node` reports streams of now (empty: the
    /// node is gone). Those who came online are routed to (on the writer);
    /// those who went offline start their owners' grace, as a stream
    /// closed here would.
    pub fn set_remote_presence(&self, node: &str, experts: BTreeSet<ExpertId>) {
        let mut state = self.lock();
        let before = state.remote.get(node).cloned().unwrap_or_default();
        if before == experts {
            return;
        }
        let was_online: Vec<(ExpertId, bool)> = before
            .union(&experts)
            .map(|id| (id.clone(), state.is_online(id)))
            .collect();
        if experts.is_empty() {
            state.remote.remove(node);
        } else {
            state.remote.insert(node.to_owned(), experts);
        }
        let writes = self.writes() && !self.is_stale();
        let mut changed = Vec::new();
        for (id, was) in was_online {
            let now = state.is_online(&id);
            if now != was {
                changed.push(id.clone());
            }
            if now && !was {
                state.offline_since.remove(&id);
                self.inner.timers.cancel(&Deadline::OwnerAway(id.clone()));
                if writes && state.experts.contains_key(&id) {
                    if let Err(e) = self.route_waiting_to(&mut state, &id) {
                        tracing::warn!(expert = %id, error = %e, "routing to an expert who came online failed");
                    }
                }
            } else if was && !now {
                self.went_offline(&mut state, &id);
            }
        }
        drop(state);
        for id in changed {
            self.expert_changed(&id);
        }
    }

    /// Called when an expert's last stream closes.
    pub(super) fn went_offline(&self, state: &mut RoutingState, expert: &ExpertId) {
        let now = self.now();
        state.offline_since.insert(expert.clone(), now);
        if state.urgent.contains_key(expert) {
            self.watch_absence(state, expert);
        }
    }

    /// Sets the grace timer of an offline owner of urgent tickets.
    pub(super) fn watch_absence(&self, state: &RoutingState, expert: &ExpertId) {
        let at = self.absence_deadline(state, expert);
        self.inner
            .timers
            .set(Deadline::OwnerAway(expert.clone()), at);
    }

    /// When an offline expert's grace runs out (offline since the desk
    /// opened, unless seen online since).
    pub(super) fn absence_deadline(&self, state: &RoutingState, expert: &ExpertId) -> UnixMicros {
        let since = state
            .offline_since
            .get(expert)
            .copied()
            .unwrap_or(self.inner.opened_at);
        since + micros(self.inner.options.owner_grace)
    }
}

/// Counts an expert online while a stream of theirs is open.
#[derive(Debug)]
pub(super) struct OnlineGuard {
    desk: Desk,
    expert: ExpertId,
}

impl Drop for OnlineGuard {
    fn drop(&mut self) {
        let mut state = self.desk.lock();
        if let Some(n) = state.online.get_mut(&self.expert) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.online.remove(&self.expert);
                self.desk.local_presence_changed();
                if !state.is_online(&self.expert) {
                    self.desk.went_offline(&mut state, &self.expert);
                }
                drop(state);
                self.desk.expert_changed(&self.expert);
            }
        }
    }
}

/// An expert's open stream; dropping it takes them offline.
#[derive(Debug)]
pub struct ExpertStream {
    pub subscription: Subscription,
    _online: OnlineGuard,
}

impl AsMut<Subscription> for ExpertStream {
    fn as_mut(&mut self) -> &mut Subscription {
        &mut self.subscription
    }
}
