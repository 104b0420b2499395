//! A resuming socket's seams: where its replay (`crate::resume`) and its live stream meet.
//!
//! Invariants:
//! * Live frames numbered up to what the replay delivered come live too, and are skipped once;
//!   live frames are in order, so the first newer one ends the skipping (per group, on a socket
//!   of several groups).
//! * `last_seq` is the last `seq` a single-group socket was sent (a replay counts): the resume
//!   point a 1012 or 1013 close names.

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
}

impl Seams {
    /// The seams of a socket that was sent `resume` first; returns them and the frames to send.
    pub(crate) fn of(resume: Resume) -> (Self, Vec<Frame>) {
        let Resume { backlog, delivered_upto, resumable, delivered_upto_in, .. } = resume;
        let seams = Self { resumable, delivered_upto, delivered_upto_in, last_seq: delivered_upto };
        (seams, backlog)
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
