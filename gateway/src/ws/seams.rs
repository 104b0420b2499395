//! A resuming socket's seams: where its replay (`crate::resume`) and its live stream meet.
//!
//! Invariants:
//! * Live frames numbered up to what the replay delivered come live too, and are skipped once;
//!   live frames are in order, so the first newer one ends the skipping (per group, on a socket
//!   of several groups).
//! * `last_seq` is the last `seq` a single-group socket was sent (a replay counts): the resume
//!   point a 1012 or 1013 close names.
//! * The echo of the socket's own send that went out without the replicas it had to wait for
//!   (`GATEWAY_REDIS_REPLICA_ACKS`) is not sent: its sender heard `unavailable`, and a failover
//!   may yet lose it. The socket's frames are in order, so one numbered past it ends the wait.

use std::collections::BTreeMap;

use axum::extract::ws::Utf8Bytes;
use shared::event::Group;

use crate::hub::{Attached, Frame, OfGroup, Outbound};
use crate::protocols::SocketHandler;
use crate::resume::{with_token, Resume};

pub(crate) struct Seams {
    /// The socket has one group: its frames' `seq` is where it can resume from.
    resumable: bool,
    /// Live frames numbered up to this were replayed: skipped once (single-group sockets).
    delivered_upto: Option<u64>,
    /// The same, per group, for a socket of several groups that resumed from a token.
    delivered_upto_in: BTreeMap<Group, u64>,
    pub(crate) last_seq: Option<u64>,
    /// The group and seq of the socket's own unreplicated send, whose echo is withheld.
    withdrawn: Option<(Group, u64)>,
}

impl Seams {
    /// The seams of a socket that was sent `resume` first; returns them and the frames to send.
    pub(crate) fn of(resume: Resume) -> (Self, Vec<Frame>) {
        let Resume { backlog, delivered_upto, resumable, delivered_upto_in, .. } = resume;
        let seams = Self { resumable, delivered_upto, delivered_upto_in, last_seq: delivered_upto, withdrawn: None };
        (seams, backlog)
    }

    /// Withholds the echo of the socket's own send `seq` in `group` (see the invariants).
    pub(crate) fn withdraw(&mut self, group: &Group, seq: u64) {
        self.withdrawn = Some((group.clone(), seq));
    }

    /// True for the withheld echo (once); a frame numbered past it ends the wait. A frame of a
    /// single-group socket carries no group: its seq alone decides.
    fn is_withdrawn(&mut self, group: Option<&Group>, seq: Option<u64>) -> bool {
        let (Some((withdrawn_group, withdrawn)), Some(seq)) = (&self.withdrawn, seq) else { return false };
        if group.is_some_and(|g| g != withdrawn_group) {
            return false;
        }
        let hit = seq == *withdrawn;
        if seq >= *withdrawn {
            self.withdrawn = None;
        }
        hit
    }

    /// The frame to send for what the hub queued, or `None` to send nothing.
    pub(crate) fn frame(
        &mut self,
        outbound: Outbound,
        attached: &mut Attached,
        handler: &mut SocketHandler,
    ) -> Option<Utf8Bytes> {
        match outbound {
            Outbound::Frame(frame) => {
                attached.link().taken(&frame);
                if self.is_withdrawn(None, frame.seq) {
                    return None;
                }
                let seq = if self.resumable { frame.seq } else { None };
                if let Some(upto) = self.delivered_upto {
                    match seq {
                        Some(seq) if seq <= upto => return None,
                        _ => self.delivered_upto = None,
                    }
                }
                self.last_seq = seq.or(self.last_seq);
                Some(frame.bytes)
            }
            Outbound::OfGroup(of_group) => match *of_group {
                OfGroup::Frame(group, frame) => {
                    // A socket of several groups: the same seam per group, then the frame carries
                    // every group's position after it.
                    attached.link().taken(&frame);
                    let seq = frame.seq;
                    if self.is_withdrawn(Some(&group), seq) {
                        return None;
                    }
                    if let (Some(seq), Some(upto)) = (seq, self.delivered_upto_in.get(&group)) {
                        if seq <= *upto {
                            return None;
                        }
                        self.delivered_upto_in.remove(&group);
                    }
                    if let Some(seq) = seq {
                        attached.advance(&group, seq);
                    }
                    Some(with_token(frame, attached.positions()).bytes)
                }
                OfGroup::Leave(room) => handler.on_evicted(attached, &room),
            },
        }
    }
}
