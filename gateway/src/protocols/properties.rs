//! Property tests of everything that decodes what a client or a backend sends: arbitrary text
//! and arbitrary JSON never panic a decoder and always yield a value or one of the documented
//! errors; every rendered frame is JSON with a `type`.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use shared::event::{ChannelMessage, ChatMessage, Event, SessionMessage, UserSnapshot};
use shared::ids::{ChannelId, ChatId, MessageId, SessionId, UserId};

use super::{chat, diary, onetask, pythia, sessions, Protocol};
use crate::errors::{ClientError, ErrorCode};
use crate::http::extract::decode_body;

/// Any JSON value, nested a few levels, with strings that include NUL, emoji and escapes.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((".{0,12}", inner), 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A frame that looks like one of the guides' frames: a known `type` and fields of any value.
fn frame_like() -> impl Strategy<Value = String> {
    let kinds = prop::sample::select(vec![
        "message",
        "typing",
        "send_message",
        "direct_message",
        "typing_indicator",
        "read_receipt",
        "join_channel",
        "leave_channel",
        "ping",
        "get_online_users",
        "motivation_requested",
        "focus_action",
    ]);
    let fields = prop::sample::select(vec![
        "content",
        "is_typing",
        "data",
        "channel_id",
        "recipient_id",
        "chat_id",
        "message_id",
        "parent_message_id",
        "message_type",
        "stress_level",
        "current_challenge",
        "action",
        "duration_seconds",
    ]);
    (kinds, prop::collection::vec((fields, json_value()), 0..5)).prop_map(|(kind, fields)| {
        let mut object: Map<String, Value> = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        object.insert("type".into(), json!(kind));
        Value::Object(object).to_string()
    })
}

/// Any text a client could send: arbitrary, JSON, or guide-like.
fn client_text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,200}", json_value().prop_map(|v| v.to_string()), frame_like()]
}

const DOCUMENTED: [ErrorCode; 5] = [
    ErrorCode::InvalidJson,
    ErrorCode::UnknownMessageType,
    ErrorCode::InvalidPayload,
    ErrorCode::MissingChannelId,
    ErrorCode::AccessDenied,
];

fn documented<T>(result: Result<T, ClientError>) -> Result<(), TestCaseError> {
    if let Err(e) = result {
        prop_assert!(DOCUMENTED.contains(&e.code), "undocumented error {:?}", e);
        prop_assert!(serde_json::from_str::<Value>(e.frame().as_str()).is_ok());
    }
    Ok(())
}

fn user() -> UserSnapshot {
    UserSnapshot {
        id: UserId::parse("u1").unwrap(),
        username: "u1".into(),
        email: None,
        is_active: true,
        created_at: None,
    }
}

/// Events carrying arbitrary text, of every kind a socket renders.
fn event() -> impl Strategy<Value = Event> {
    (".{0,60}", any::<bool>(), json_value()).prop_flat_map(|(text, flag, raw)| {
        let session = SessionMessage {
            message_id: MessageId::new(),
            session_id: SessionId::from(uuid::Uuid::new_v4()),
            sender_id: UserId::parse("u1").unwrap(),
            sender_name: text.clone(),
            content: text.clone(),
            created_at: shared::time::now(),
        };
        let chat = ChatMessage {
            message_id: MessageId::new(),
            chat_id: ChatId::parse("c1").unwrap(),
            sender: user(),
            recipient_id: flag.then(|| UserId::parse("u2").unwrap()),
            content: text.clone(),
            message_type: "text".into(),
            parent_message_id: None,
            created_at: shared::time::now(),
        };
        let channel = ChannelMessage {
            message_id: MessageId::new(),
            channel_id: ChannelId::parse("general").unwrap(),
            user_id: UserId::parse("u1").unwrap(),
            username: text.clone(),
            email: None,
            content: text.clone(),
            created_at: shared::time::now(),
        };
        let raw = match raw {
            Value::Object(_) => raw,
            other => json!({ "type": "custom", "value": other }),
        };
        prop::sample::select(vec![
            Event::SessionMessage(session),
            Event::ChatMessage(chat.clone()),
            Event::DirectMessage(chat),
            Event::ChannelMessage(channel.clone()),
            Event::Mention { message: channel },
            Event::Raw { event: raw },
        ])
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn socket_decoders_never_panic_and_answer_documented_errors(text in client_text()) {
        documented(sessions::decode(&text))?;
        documented(chat::decode(&text))?;
        documented(pythia::decode(&text))?;
        documented(diary::decode(&text))?;
        documented(onetask::decode_focus(&text))?;
    }

    #[test]
    fn the_envelope_and_job_decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = shared::event::Envelope::decode(&bytes);
        let _ = shared::jobs::Job::decode(&bytes);
    }

    #[test]
    fn server_api_bodies_answer_400_or_422(bytes in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| v.to_string().into_bytes()),
    ]) {
        let check = |r: Result<(), crate::http::error::ApiError>| match r {
            Ok(()) => Ok(()),
            Err(e) => {
                prop_assert!([400, 422].contains(&e.status.as_u16()), "{:?}", e);
                Ok(())
            }
        };
        check(decode_body::<crate::http::api::UserBody>(&bytes).map(drop))?;
        check(decode_body::<crate::http::onetask::NotificationBody>(&bytes).map(drop))?;
        check(decode_body::<crate::http::onetask::TaskEventBody>(&bytes).map(drop))?;
        check(decode_body::<crate::http::onetask::PublishBody>(&bytes).map(drop))?;
        check(decode_body::<crate::http::channels::ChannelBody>(&bytes).map(drop))?;
        check(decode_body::<crate::http::channels::MessageBody>(&bytes).map(drop))?;
        check(decode_body::<crate::http::channels::ReactionBody>(&bytes).map(drop))?;
    }

    #[test]
    fn rendered_frames_are_json_with_a_type(event in event()) {
        for protocol in [Protocol::Sessions, Protocol::Diary, Protocol::Chat, Protocol::Pythia, Protocol::OneTask] {
            if let Some(frame) = protocol.render(&event) {
                let parsed: Value = serde_json::from_str(&frame).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(parsed.get("type").is_some() || matches!(event, Event::Raw { .. }), "{}", frame);
            }
        }
        let envelope = shared::event::Envelope::to_all(event);
        prop_assert_eq!(shared::event::Envelope::decode(&envelope.encode()).unwrap(), envelope);
    }
}
