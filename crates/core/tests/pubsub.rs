//! Pub/sub stories: a publish is an entry whose only outcome is an effect for every node's
//! subscribers; the state itself keeps nothing of it.

mod common;

use bytes::Bytes;
use common::{World, push};
use turnstile_core::{Command, Effect, Reply};

fn publish(channel: &str, message: &str) -> Command {
    Command::PubSubPublish {
        channel: Bytes::from(channel.to_owned()),
        message: Bytes::from(message.to_owned()),
    }
}

#[test]
fn a_publish_is_an_effect_stamped_with_the_state_clock_and_nothing_else() {
    let mut w = World::new();
    w.reply(push("q", "kept"));
    let before = w.state.snapshot_copy();
    w.now = 5_000;
    let (reply, fx) = w.apply(publish("news", "hello"));
    assert_eq!(reply, Reply::Int(0), "the state machine knows no subscribers");
    assert_eq!(
        fx,
        vec![Effect::Message {
            channel: Bytes::from_static(b"news"),
            message: Bytes::from_static(b"hello"),
            at: 5_000
        }]
    );
    // Nothing stored: the state differs from before only in its clock and applied index.
    assert_eq!(w.state.summary(), before.summary());
    assert_eq!(w.state.payload_bytes(), before.payload_bytes());
}

#[test]
fn a_stamp_behind_the_clock_is_stamped_with_the_clock() {
    // The clock never goes back, and the effect carries the clock: what a late node compares.
    let mut w = World::new();
    w.now = 9_000;
    w.apply(Command::Tick);
    w.now = 8_000;
    let (_, fx) = w.apply(publish("c", "m"));
    assert!(matches!(fx.as_slice(), [Effect::Message { at: 9_000, .. }]), "{fx:?}");
}

#[test]
fn publishes_replay_to_the_same_state() {
    let mut w = World::new();
    for i in 0..5 {
        w.apply(publish("c", &format!("m{i}")));
    }
    assert_eq!(w.replay(), w.state);
}

#[test]
fn a_publish_longer_than_its_channel_counts_its_message_for_max_payload() {
    assert_eq!(publish("c", "12345").payload_len(), 5);
    assert_eq!(publish("channel", "1").payload_len(), 7);
    let mut names = 0;
    publish("c", "m").names(&mut |_, _| names += 1);
    assert_eq!(names, 0, "a channel is not a stored name");
    assert_eq!(publish("c", "m").message_len(), None, "nothing stored: never refused for memory");
}
