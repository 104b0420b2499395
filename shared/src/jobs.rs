//! Durable work for the worker. A job is appended to the jobs stream in the same atomic step as the live
//! publish (see `Broker::publish_and_enqueue`), so what a client saw live is always persisted.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use chrono::{DateTime, Utc};

use crate::event::{ChannelMessage, ChatMessage, Position, SessionMessage};
use crate::ids::{ChatId, MessageId, UserId};

/// What earns gamification points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityKind {
    /// A chat message sent, on any app.
    Message,
    /// A task completed (task-events with action `completed`).
    TaskCompleted,
    /// A focus session completed.
    FocusCompleted,
}

impl ActivityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Message => "message",
            ActivityKind::TaskCompleted => "task_completed",
            ActivityKind::FocusCompleted => "focus_completed",
        }
    }
}

/// One activity of one user. `id` makes it count once, however often its job is delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Activity {
    pub id: String,
    pub user_id: UserId,
    pub activity: ActivityKind,
    #[serde(with = "crate::time::rfc3339")]
    pub at: DateTime<Utc>,
    /// For a completed focus session: how long its timer ran, pauses excluded (the rules count
    /// it only after their minimum). Absent for other activities, and in jobs of older nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran_seconds: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// Persist the message (idempotent by id) and move the session's `last_message_at`.
    SessionMessage(SessionMessage),
    /// Persist the chat or direct message (idempotent by id); a chat message moves the chat's
    /// `last_message_at`.
    ChatMessage(ChatMessage),
    /// Persist a Pythia channel message (idempotent by id). The server API also stores it once
    /// its publication went out; this job is what stores it when the answer was lost (a timeout
    /// after Redis ran the publish), so a message seen live always has its row.
    ChannelMessage(ChannelMessage),
    /// Record that `user_id` read `message_id`, once.
    ReadReceipt {
        message_id: MessageId,
        chat_id: ChatId,
        user_id: UserId,
        #[serde(with = "crate::time::rfc3339")]
        read_at: DateTime<Utc>,
    },
    /// An activity that is not a message job of its own (Pythia messages, tasks, focus).
    Activity(Activity),
}

impl Job {
    /// The gamification activity this job stands for, if any: every chat message (any app) is
    /// one, keyed by its message id.
    pub fn activity(&self) -> Option<Activity> {
        let message = |id: &crate::ids::MessageId, user: &UserId, at: &DateTime<Utc>| Activity {
            id: format!("message:{id}"),
            user_id: user.clone(),
            activity: ActivityKind::Message,
            at: *at,
            ran_seconds: None,
        };
        match self {
            Job::SessionMessage(m) => Some(message(&m.message_id, &m.sender_id, &m.created_at)),
            Job::ChatMessage(m) => Some(message(&m.message_id, &m.sender.id, &m.created_at)),
            Job::ChannelMessage(m) => Some(message(&m.message_id, &m.user_id, &m.created_at)),
            Job::Activity(a) => Some(a.clone()),
            Job::ReadReceipt { .. } => None,
        }
    }

    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("jobs always serialize"))
    }

    pub fn decode(raw: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(raw)
    }
}

/// A job as the worker applies it, with the position of the publication it went out with: the
/// broker stamps each job with the call's first publication's position (`stamp`, leading
/// `"group_seq"` and `"group_epoch"` fields, which `Job` itself ignores). A chat message is
/// stored with it, so that a client resuming past its group's window is sent it from the database.
#[derive(Debug, Clone, PartialEq)]
pub struct StampedJob {
    pub job: Job,
    /// `None` for a job published alone, or one stamped by no broker (a replayed dead letter).
    pub published: Option<Position>,
    /// The trace context of the publication it went out with, when that was sampled
    /// (`with_traceparent`).
    pub traceparent: Option<String>,
}

impl StampedJob {
    pub fn decode(raw: &[u8]) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize)]
        struct Stamp {
            group_seq: Option<u64>,
            group_epoch: Option<u64>,
            traceparent: Option<String>,
        }
        let job = Job::decode(raw)?;
        let stamp: Stamp = serde_json::from_slice(raw)?;
        let published = match (stamp.group_epoch, stamp.group_seq) {
            (Some(epoch), Some(seq)) => Some(Position { epoch, seq }),
            _ => None,
        };
        Ok(Self { job, published, traceparent: stamp.traceparent })
    }
}

/// The job `payload` with the trace context of its sampled publication in a leading
/// `"traceparent"` field (which `Job` itself ignores), for the worker to continue the trace.
pub fn with_traceparent(traceparent: &str, payload: &[u8]) -> Bytes {
    crate::event::with_leading_fields(&format!("\"traceparent\":\"{traceparent}\""), payload)
}

/// The job `payload` (a JSON object) with `position` in leading fields: `{"group_seq":S,
/// "group_epoch":E,` and the rest of the object. Names of their own, so that no job's field is
/// ever shadowed. The Redis publish script builds the same bytes in Lua.
pub fn stamp(position: Position, payload: &[u8]) -> Bytes {
    crate::event::with_leading_fields(
        &format!("\"group_seq\":{},\"group_epoch\":{}", position.seq, position.epoch),
        payload,
    )
}

impl From<Job> for StampedJob {
    fn from(job: Job) -> Self {
        Self { job, published: None, traceparent: None }
    }
}

/// One entry read from the jobs stream: its stream id (for the ack) and its raw payload.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEntry {
    pub id: String,
    pub payload: Bytes,
}

/// A job the worker could not apply (undecodable, or refused by the database), kept in the
/// dead-letter stream with why, until an operator replays it (`worker dead-letters --replay ID`).
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Its id in the dead-letter stream (what `--replay` takes).
    pub id: String,
    /// Its id in the jobs stream when it failed.
    pub job_id: String,
    pub payload: Bytes,
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_job_decodes_with_the_position_it_went_out_with() {
        let job = Job::ReadReceipt {
            message_id: MessageId::new(),
            chat_id: ChatId::parse("c1").unwrap(),
            user_id: UserId::parse("u1").unwrap(),
            read_at: crate::time::now(),
        };
        let at = Position { epoch: 1_764_547_200_000_123, seq: 1_764_547_200_007 };
        let stamped = StampedJob::decode(&stamp(at, &job.encode())).unwrap();
        assert_eq!(stamped, StampedJob { job: job.clone(), published: Some(at), traceparent: None });
        assert_eq!(StampedJob::decode(&job.encode()).unwrap(), StampedJob::from(job.clone()));
        // An activity has an `at` of its own: the stamp never shadows a job's field.
        let activity = Job::Activity(Activity {
            id: "a1".into(),
            user_id: UserId::parse("u1").unwrap(),
            activity: ActivityKind::Message,
            at: crate::time::now(),
            ran_seconds: None,
        });
        assert_eq!(StampedJob::decode(&stamp(at, &activity.encode())).unwrap().published, Some(at));
    }
}
